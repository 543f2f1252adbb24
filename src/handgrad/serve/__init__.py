"""``handgrad serve``: the Open Inference Protocol (KServe v2 / Triton HTTP/REST) with
dynamic batching, operations endpoints, safety limits, and a page where you draw a
digit and watch the network (needs ``pip install 'handgrad[serve]'``).

- :func:`serve` runs a server for model files until SIGTERM;
- :func:`create_app` builds the ASGI app, for any ASGI server;
- :class:`ServeConfig` holds the batching and safety settings.
"""

from .app import ServeConfig, create_app
from .batcher import DynamicBatcher, Overloaded
from .protocol import ProtocolError
from .served import ServedModel
from .server import load_models, serve

__all__ = ["DynamicBatcher", "Overloaded", "ProtocolError", "ServeConfig", "ServedModel",
           "create_app", "load_models", "serve"]
