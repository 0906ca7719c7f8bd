"""The LuCI client API surface the wormhole views may use (and the stand-in provides)."""

ALLOWED_REQUIRES = {"view", "rpc", "ui", "poll", "dom", "baseclass"}
ALLOWED_L = {"resolveDefault"}

# The members of LuCI's ui class the views use: the stand-in's ui.js provides exactly these,
# written from upstream's documented behaviour (render/getValue/setValue of the widgets,
# the markup they render, tabs.initTabGroup, showModal's extra classes).
ALLOWED_UI = {"addNotification", "showModal", "hideModal", "createHandlerFn", "instantiateView",
              "Textfield", "Select", "Checkbox", "DynamicList", "tabs"}
