"""sunbeam's services, one process each (``python -m sunbeam.services.<name>.main``).

Every service's first import runs this, before anything imports msgspec: msgspec's first
import tries ``typing_extensions`` (for its ``get_type_hints``) and that module loads
inspect, ast, dis and tokenize, ~1.3 MB of code objects in every process that nothing
here uses. Without it msgspec takes ``typing.get_type_hints``, which on Python >= 3.11
resolves every annotation our Structs use (none is a typing_extensions type). The block
holds for that one import only: a later ``import typing_extensions`` works as usual.
"""

import sys


def _msgspec_without_typing_extensions() -> None:
    if "msgspec" in sys.modules or "typing_extensions" in sys.modules:
        return
    sys.modules["typing_extensions"] = None  # type: ignore[assignment]  # import fails -> fallback
    try:
        import msgspec  # noqa: F401
    finally:
        del sys.modules["typing_extensions"]


_msgspec_without_typing_extensions()
