"""Doc reconciliation, pure part: claims extracted from prose, compared with live facts, patched."""
