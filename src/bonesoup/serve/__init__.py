"""Serve one run folder over an OpenAI-compatible HTTP API, with a preference per request.

Example:
    bonesoup serve runs/demo --port 8000
    curl -s 127.0.0.1:8000/v1/chat/completions -d '{"messages": [{"role": "user",
        "content": "Hi"}], "preference": [0.3, 0.7], "temperature": 0}'
"""

from bonesoup.serve.app import SoupServer, create_server, serve
from bonesoup.serve.engine import SoupEngine
from bonesoup.serve.protocol import ApiError, Limits

__all__ = ["ApiError", "Limits", "SoupEngine", "SoupServer", "create_server", "serve"]
