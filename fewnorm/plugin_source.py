"""Where the specs being registered come from: set by the plugin loaders, read by the registries.

Its own module, so that the registry (which reads it) and the plugin loaders (which set
it, and which the registry calls through an injected discovery hook) import neither
each other nor anything private of each other.
"""

from __future__ import annotations

import contextvars

#: The plugin being loaded (``name==version``, ``file:PATH`` or ``module:NAME``), so that its
#: registrations record where they came from; ``None`` outside a plugin's registration code.
PLUGIN_SOURCE: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "fewnorm_plugin_source", default=None
)
