"""The LAMPS swap connector under its earlier path, for configs that name
`kv_connector_module_path="lamps.vllm.swap"`; it lives in `lamps.connector`."""

from lamps.connector import LampsSwapConnector

__all__ = ["LampsSwapConnector"]
