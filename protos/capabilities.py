"""Names an agent puts in RegisterRequest.capabilities that the coordinator acts on: one place
for both sides (an agent-only install carries this package, not the coordinator)."""

from __future__ import annotations

# The agent can train PAC+'s parallel adapters; a --method pac coordinator refuses agents
# without it (they would train LoRA blocks and every upload would be refused).
PAC = "pac"
