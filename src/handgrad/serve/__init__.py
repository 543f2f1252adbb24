"""``handgrad serve``: the Open Inference Protocol (KServe v2 / Triton HTTP/REST) with
dynamic batching, operations endpoints, safety limits, and a page where you draw a
digit and watch the network (needs ``pip install 'handgrad[serve]'``).

- :func:`serve` runs a server for model files until SIGTERM;
- :func:`create_app` builds the ASGI app, for any ASGI server;
- :class:`ServeConfig` holds the batching and safety settings.

The web framework loads on first use of what needs it, so ``ServeConfig`` (and
the command line's help) work without the extra installed.
"""

from .config import ServeConfig

_LAZY = {"create_app": "app", "DynamicBatcher": "batcher", "Overloaded": "batcher",
         "ProtocolError": "protocol", "ServedModel": "served", "load_models": "server",
         "serve": "server"}

__all__ = ["ServeConfig", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'handgrad.serve' has no attribute {name!r}")
