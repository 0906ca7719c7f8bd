"""A LuCI stand-in for browser tests: the runtime surface the views use, served over HTTP
with ubus JSON-RPC answered by the real rpcd plugin (see server.py)."""
