"""The LuCI client API surface the wormhole views may use (and the stand-in provides)."""

ALLOWED_REQUIRES = {"view", "rpc", "ui", "poll", "dom", "baseclass"}
ALLOWED_L = {"resolveDefault"}
