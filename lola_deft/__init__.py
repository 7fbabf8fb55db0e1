"""LoLa-DEFT: low-latency device-edge cooperative LoRA fine-tuning.

The repository keeps one top-level folder per role (scheduler/, server/, device_agent/, ml/,
cli/, protos/); they are installed under this one namespace, so nothing generic such as
`server` or `scheduler` lands in site-packages.
"""

__version__ = "0.1.0"
