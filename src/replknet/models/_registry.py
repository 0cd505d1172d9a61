"""Registration of this library's models with timm, keeping the list of our own names."""

from __future__ import annotations

from collections.abc import Callable

from timm.models import register_model

_OUR_MODELS: set[str] = set()


def register(name: str, factory: Callable, module: str, doc: str = "") -> Callable:
    """Register ``factory`` with timm under ``name`` (timm keys entrypoints by the function name)."""
    factory.__name__ = factory.__qualname__ = name
    factory.__doc__ = doc or factory.__doc__
    factory.__module__ = module
    _OUR_MODELS.add(name)
    return register_model(factory)


def our_models() -> list[str]:
    return sorted(_OUR_MODELS)
