"""PVE's permission model (its ``user.cfg``): users and their API tokens, roles, the ACL tree and
pools, and the checks the API applies with them.

How PVE computes the privileges of a user or token on a path (pve-access-control,
``PVE::AccessControl::roles`` and ``PVE::RPCEnvironment::permissions``):

- Walking the path from ``/`` down, at each level the entries for the token (for a token), else
  for the user, else for the user's groups replace what was found above; an entry set on a
  parent applies below it only when it propagates. ``NoAccess`` wins over everything.
- A pool's ACL entries give their roles to the pool's guests (``/vms/<vmid>``) and storages
  (``/storage/<id>``), without propagation, only where no entry on the path set that role, and
  never over a ``NoAccess``.
- A privilege-separated token has the privileges that both it and its user have; a token without
  privilege separation has its user's. ``root@pam`` has every privilege.

A refusal is ``403 Permission check failed (<path>, <privilege>)`` as ``raise_perm_exc`` words it.
The schema's ``permissions`` object of each route (``permissions.json``, generated beside
``params.json``) is evaluated by :meth:`Access.check_route`; what routes declare only in words
(``"user": "all"`` plus a description) their handlers check themselves.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

PERMISSIONS_FILE = Path(__file__).with_name("permissions.json")
ROOT = "root@pam"

# The privilege groups PVE builds its built-in roles from: per category, what only root may do,
# what an admin, a user and an auditor may do.
_GROUPS: dict[str, dict[str, list[str]]] = {
    "VM": {
        "root": [],
        "admin": [
            "VM.Config.Disk",
            "VM.Config.CPU",
            "VM.Config.Memory",
            "VM.Config.Network",
            "VM.Config.HWType",
            "VM.Config.Options",
            "VM.Allocate",
            "VM.Clone",
            "VM.GuestAgent.Unrestricted",
            "VM.Migrate",
            "VM.Replicate",
            "VM.Snapshot",
            "VM.Snapshot.Rollback",
        ],
        "user": [
            "VM.Config.CDROM",
            "VM.Config.Cloudinit",
            "VM.Console",
            "VM.Backup",
            "VM.GuestAgent.FileRead",
            "VM.GuestAgent.FileSystemMgmt",
            "VM.GuestAgent.FileWrite",
            "VM.PowerMgmt",
        ],
        "audit": ["VM.Audit", "VM.GuestAgent.Audit"],
    },
    "Sys": {
        "root": ["Sys.PowerMgmt", "Sys.Modify", "Sys.Incoming", "Sys.AccessNetwork"],
        "admin": ["Sys.Console", "Sys.Syslog"],
        "user": [],
        "audit": ["Sys.Audit"],
    },
    "Datastore": {
        "root": [],
        "admin": ["Datastore.Allocate", "Datastore.AllocateTemplate"],
        "user": ["Datastore.AllocateSpace"],
        "audit": ["Datastore.Audit"],
    },
    "SDN": {
        "root": [],
        "admin": ["SDN.Allocate", "SDN.Audit"],
        "user": ["SDN.Use"],
        "audit": ["SDN.Audit"],
    },
    "User": {
        "root": ["Realm.Allocate"],
        "admin": ["User.Modify", "Group.Allocate", "Realm.AllocateUser"],
        "user": [],
        "audit": [],
    },
    "Pool": {
        "root": [],
        "admin": ["Pool.Allocate"],
        "user": ["Pool.Audit"],
        "audit": ["Pool.Audit"],
    },
    "Mapping": {
        "root": [],
        "admin": ["Mapping.Modify"],
        "user": ["Mapping.Use"],
        "audit": ["Mapping.Audit"],
    },
}


def builtin_roles() -> tuple[set[str], dict[str, set[str]]]:
    """Every valid privilege, and the built-in roles (PVEVMAdmin, PVEDatastoreUser, ...)."""
    valid = {"Permissions.Modify"}
    roles: dict[str, set[str]] = {"NoAccess": set(), "PVEAdmin": set(), "PVEAuditor": set()}
    for cat, groups in _GROUPS.items():
        valid.update(p for level in groups.values() for p in level)
        admin = set(groups["admin"] + groups["user"] + groups["audit"])
        roles[f"PVE{cat}Admin"] = set(admin)
        roles["PVEAdmin"] |= admin
        if groups["user"]:
            roles[f"PVE{cat}User"] = set(groups["user"] + groups["audit"])
        roles["PVEAuditor"] |= set(groups["audit"])
    roles["PVEAdmin"].discard("Mapping.Modify")
    roles["PVETemplateUser"] = {"VM.Clone", "VM.Audit"}
    roles["Administrator"] = set(valid)
    return valid, roles


VALID_PRIVS, BUILTIN_ROLES = builtin_roles()

# pve-access-control's check_path: the paths an ACL entry may name.
_PATH = re.compile(
    r"^(/|/access|/access/groups|/access/groups/[\w.-]+|/access/realm|/access/realm/[\w.-]+"
    r"|/nodes|/nodes/[\w.-]+|/pool|/pool/[\w.-]+(?:/[\w.-]+){0,2}|/sdn|/sdn/controllers"
    r"|/sdn/controllers/[\w.-]+|/sdn/dns|/sdn/dns/[\w.-]+|/sdn/ipams|/sdn/ipams/[\w.-]+"
    r"|/sdn/zones|/sdn/zones/[\w.-]+|/sdn/zones/[\w.-]+/[\w.-]+|/sdn/zones/[\w.-]+/[\w.-]+/\d+"
    r"|/storage|/storage/[\w.-]+|/vms|/vms/\d+|/mapping|/mapping/\w+|/mapping/\w+/[\w.-]+)$"
)
_USERID = re.compile(r"^[^\s:/]+@[A-Za-z][A-Za-z0-9.\-_]+$")
_TOKEN_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9.\-_]+$")
_ROLEID = re.compile(r"^[A-Za-z0-9.\-_]+$")
_POOLID = re.compile(r"^[A-Za-z0-9.\-_]+(?:/[A-Za-z0-9.\-_]+){0,2}$")


class Denied(Exception):
    """A refused permission check: ``403`` with PVE's message."""

    def __init__(self, what: str = "") -> None:
        self.message = f"Permission check failed ({what})" if what else "Permission check failed"
        super().__init__(self.message)


class AccessError(Exception):
    """A refused change of the access configuration (PVE answers 500 with the message)."""


@dataclass
class Token:
    privsep: bool = True
    comment: str = ""
    expire: int = 0
    secret: str = field(default_factory=lambda: str(uuid.uuid4()))


@dataclass
class User:
    userid: str
    enable: bool = True
    comment: str = ""
    tokens: dict[str, Token] = field(default_factory=dict)


@dataclass
class Pool:
    comment: str = ""
    storage: set[str] = field(default_factory=set)


# One ACL node: (kind, who) -> role -> propagate; kind is user, group or token.
AclEntries = dict[tuple[str, str], dict[str, bool]]


def normalize_path(path: str) -> str | None:
    """PVE's normalize_path: one leading slash, no doubled or trailing ones."""
    if not path:
        return None
    path = re.sub(r"/+", "/", path).rstrip("/") or "/"
    if not path.startswith("/"):
        path = "/" + path
    return path if re.fullmatch(r"[\w.\-/]+", path) else None


def split_list(value: str | None) -> list[str]:
    return [v for v in re.split(r"[,;\s]+", value or "") if v]


class Access:
    """The sandbox cluster's users, tokens, roles, ACL and pools; ``pool_of`` tells which pool a
    guest is in (the lab's guests carry it)."""

    def __init__(self, pool_vms: Callable[[], dict[int, str]]) -> None:
        self._pool_vms = pool_vms
        self.users: dict[str, User] = {ROOT: User(ROOT, comment="root")}
        self.groups: dict[str, set[str]] = {}
        self.roles: dict[str, set[str]] = {k: set(v) for k, v in BUILTIN_ROLES.items()}
        self.acl: dict[str, AclEntries] = {}
        self.pools: dict[str, Pool] = {}

    # -- the configuration ----------------------------------------------------------------

    def add_token(
        self, userid: str, name: str, *, privsep: bool = True, secret: str | None = None
    ) -> Token:
        user = self.users.get(userid)
        if user is None:
            raise AccessError(f"no such user ('{userid}')")
        if not _TOKEN_NAME.match(name):
            raise AccessError(f"invalid token name '{name}'")
        if name in user.tokens:
            raise AccessError("Token already exists.")
        token = Token(privsep=privsep)
        if secret is not None:
            token.secret = secret
        user.tokens[name] = token
        return token

    def add_user(self, userid: str, *, enable: bool = True, comment: str = "") -> User:
        if not _USERID.match(userid):
            raise AccessError(f"value '{userid}' does not look like a valid user name")
        if userid in self.users:
            raise AccessError(f"create user failed: user '{userid}' already exists")
        user = User(userid, enable=enable, comment=comment)
        self.users[userid] = user
        return user

    def add_role(self, roleid: str, privs: Iterable[str]) -> None:
        if not _ROLEID.match(roleid):
            raise AccessError(f"invalid role ID '{roleid}'")
        if roleid in self.roles:
            raise AccessError(f"role '{roleid}' already exists")
        wanted = set(privs)
        for priv in sorted(wanted):
            if priv not in VALID_PRIVS:
                raise AccessError(f"invalid privilege '{priv}'")
        self.roles[roleid] = wanted

    def add_pool(self, poolid: str, comment: str = "") -> None:
        if not _POOLID.match(poolid):
            raise AccessError(f"invalid pool ID '{poolid}'")
        if poolid in self.pools:
            raise AccessError(f"pool '{poolid}' already exists")
        self.pools[poolid] = Pool(comment=comment)

    def update_acl(
        self,
        path: str,
        roles: Iterable[str],
        *,
        users: Iterable[str] = (),
        groups: Iterable[str] = (),
        tokens: Iterable[str] = (),
        propagate: bool = True,
        delete: bool = False,
    ) -> None:
        """``PUT /access/acl`` (``pveum acl modify`` / ``pveum acl delete``)."""
        norm = normalize_path(path)
        if norm is None or not _PATH.match(norm):
            raise AccessError(f"invalid ACL path '{path}'")
        targets: list[tuple[str, str]] = []
        for userid in users:
            if userid not in self.users:
                raise AccessError(f"user '{userid}' does not exist")
            targets.append(("user", userid))
        for group in groups:
            if group not in self.groups:
                raise AccessError(f"group '{group}' does not exist")
            targets.append(("group", group))
        for tokenid in tokens:
            userid, _, name = tokenid.partition("!")
            if name not in getattr(self.users.get(userid), "tokens", {}):
                raise AccessError(f"no such token '{name}' for user '{userid}'")
            targets.append(("token", tokenid))
        node = self.acl.setdefault(norm, {})
        for role in roles:
            if role not in self.roles:
                raise AccessError(f"role '{role}' does not exist")
            for target in targets:
                held = node.setdefault(target, {})
                if delete:
                    held.pop(role, None)
                else:
                    held[role] = propagate

    def remove_vm_access(self, vmid: int) -> None:
        """What destroying a guest does to the access configuration: its ACL entries go."""
        self.acl.pop(f"/vms/{vmid}", None)

    def reset(self) -> None:
        """Back to root alone (sandbox control: tests start from a known state)."""
        self.users = {ROOT: self.users[ROOT]}
        self.groups.clear()
        self.roles = {k: set(v) for k, v in BUILTIN_ROLES.items()}
        self.acl.clear()
        self.pools.clear()

    # -- authentication -------------------------------------------------------------------

    def token_secret(self, tokenid: str) -> str | None:
        userid, sep, name = tokenid.partition("!")
        user = self.users.get(userid)
        if not sep or user is None or not user.enable:
            return None
        token = user.tokens.get(name)
        return token.secret if token else None

    # -- privileges -----------------------------------------------------------------------

    def _roles(self, who: str, path: str) -> dict[str, bool]:
        """Roles of ``who`` (a user or a token id) on ``path`` from the ACL tree, pools aside."""
        parts = [""] if path == "/" else path.split("/")
        is_token = "!" in who
        found: dict[str, bool] = {}
        for depth in range(len(parts)):
            final = depth == len(parts) - 1
            here = "/" + "/".join(parts[1 : depth + 1]) if depth else "/"
            node = self.acl.get(here, {})
            lookups: list[list[tuple[str, str]]] = (
                [[("token", who)]] if is_token else [[("user", who)]]
            )
            if not is_token:
                lookups.append(
                    [("group", g) for g, members in sorted(self.groups.items()) if who in members]
                )
            for keys in lookups:
                new = {
                    role: prop
                    for key in keys
                    for role, prop in node.get(key, {}).items()
                    if final or prop
                }
                if new:
                    found = new
                    break
        if "NoAccess" in found:
            return {"NoAccess": found["NoAccess"]}
        return found

    def _compiled(self, who: str, path: str) -> dict[str, bool]:
        roles = self._roles(who, path)
        pool_roles: dict[str, bool] = {}
        member = re.fullmatch(r"/(vms|storage)/(.+)", path)
        if member:
            pool = self._pool_of(member.group(1), member.group(2))
            if pool is not None:
                pool_roles = self._roles(who, f"/pool/{pool}")
        if pool_roles and "NoAccess" not in roles:
            if "NoAccess" in pool_roles:
                roles = {"NoAccess": False}
            else:
                for role in pool_roles:
                    roles.setdefault(role, False)
        privs: dict[str, bool] = {}
        for role, prop in roles.items():
            for priv in self.roles.get(role, ()):
                privs[priv] = privs.get(priv, False) or prop
        return privs

    def _pool_of(self, kind: str, key: str) -> str | None:
        if kind == "vms":
            if not key.isdigit():
                return None
            pool = self._pool_vms().get(int(key))
            return pool if pool in self.pools else None
        return next((p for p, rec in sorted(self.pools.items()) if key in rec.storage), None)

    def permissions(self, authid: str, path: str) -> dict[str, bool]:
        """Privilege -> propagate flag of ``authid`` (user or ``user!token``) on ``path``."""
        if authid == ROOT:
            return dict.fromkeys(self.roles["Administrator"], True)
        userid, sep, name = authid.partition("!")
        if sep:
            token = getattr(self.users.get(userid), "tokens", {}).get(name)
            if token is None:
                return {}
            user_privs = self.permissions(userid, path)
            if not token.privsep:
                return user_privs
            privs = self._compiled(authid, path)
            if userid == ROOT:
                return privs
            return {p: user_privs[p] and v for p, v in privs.items() if p in user_privs}
        if userid not in self.users:
            return {}
        return self._compiled(userid, path)

    def has(self, authid: str, path: str, privs: Iterable[str], any_: bool = False) -> bool:
        held = self.permissions(authid, path)
        wanted = list(privs)
        return any(p in held for p in wanted) if any_ else all(p in held for p in wanted)

    def check(self, authid: str, path: str, privs: Iterable[str], any_: bool = False) -> None:
        """``$rpcenv->check`` / ``check_any``: raise :class:`Denied` naming what is missing."""
        held = self.permissions(authid, path)
        wanted = list(privs)
        if any_:
            if not any(p in held for p in wanted):
                raise Denied(f"{path}, {'|'.join(wanted)}")
            return
        for priv in wanted:
            if priv not in held:
                raise Denied(f"{path}, {priv}")

    def check_vm(
        self, authid: str, vmid: int, pool: str | None, privs: Iterable[str], any_: bool = False
    ) -> None:
        """``check_vm_perm``: the pool's entries when a pool is named, else the guest's path."""
        wanted = list(privs)
        if pool and self.has(authid, f"/pool/{pool}", wanted, any_):
            return
        self.check(authid, f"/vms/{vmid}", wanted, any_)

    def check_perm_modify(self, authid: str, path: str) -> None:
        wanted = ["Permissions.Modify"]
        if path.startswith("/storage/"):
            wanted.append("Datastore.Allocate")
        elif path.startswith("/vms/"):
            wanted.append("VM.Allocate")
        elif path.startswith("/pool/"):
            wanted.append("Pool.Allocate")
        self.check(authid, path, wanted, any_=True)

    def check_route(self, method: str, template: str, params: dict[str, Any], authid: str) -> None:
        """Evaluate the schema's ``permissions`` of ``METHOD template`` for ``authid``."""
        spec = declared_permissions().get(f"{method} {template}")
        if spec is None:
            return  # not in the generated table: the handler decides
        if authid == ROOT:
            return
        if spec.get("user") in ("all", "world"):
            return
        check = spec.get("check")
        if not check:
            raise Denied("user != root@pam")
        self._eval(check, authid, params)

    def _eval(self, check: list[Any], authid: str, params: dict[str, Any]) -> None:
        test = check[0]
        if test == "and":
            for sub in check[1:]:
                self._eval(sub, authid, params)
        elif test == "or":
            for sub in check[1:]:
                try:
                    self._eval(sub, authid, params)
                    return
                except Denied:
                    continue
            raise Denied()
        elif test == "perm":
            template, privs = check[1], check[2]
            options = dict(zip(check[3::2], check[4::2], strict=False))
            needed = options.get("require_param")
            if needed and params.get(needed) is None:
                raise Denied()
            path = normalize_path(
                re.sub(r"\{(\w+)\}", lambda m: str(params.get(m[1], "")), template)
            )
            self.check(authid, path or template, privs, any_=bool(options.get("any")))
        elif test == "perm-modify":
            path = normalize_path(str(params.get(check[1].strip("{}"), "")))
            if path is None:
                raise Denied()
            self.check_perm_modify(authid, path)
        elif test == "userid-param":
            userid = str(params.get("userid", ""))
            if check[1] == "self":
                if authid != userid:
                    raise Denied()
            else:
                realm = userid.rpartition("@")[2]
                self.check(authid, f"/access/realm/{realm}", ["Realm.AllocateUser"])
        elif test == "userid-group":
            # Simplified: User.Modify on /access/groups (every group) is asked for.
            self.check(authid, "/access/groups", check[1], any_=True)
        else:
            raise Denied("unknown permission test")


# -- the permissions table ---------------------------------------------------------------------


@cache
def declared_permissions() -> dict[str, dict[str, Any]]:
    if not PERMISSIONS_FILE.exists():
        return {}
    raw: dict[str, Any] = json.loads(PERMISSIONS_FILE.read_text())
    # A route whose schema has no permissions is root-only: kept as an empty object.
    return {k: (v or {}) for k, v in raw.items()}
