"""A checkpoint's adapter, made ready to share: the base model named (never a local path), the
tokenizer beside it, and a model card written from the run (task, labels, metric before and
after, rounds, devices, policy, configuration, versions)."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lola_deft.ml.glue import EMBEDDED_TASK_DIR, TaskSpec
from lola_deft.server.toml_text import dumps

RECORD_FILE = "training_run.json"
TOKENIZER_FOLDER = ".tokenizer"  # in the checkpoints folder: saved once, linked each round


@dataclass(frozen=True)
class Publication:
    """What every checkpoint's adapter folder gets besides the weights. The tokenizer is saved
    once, at start-up, into `tokenizer` (a folder beside the checkpoints) and hard-linked into
    each checkpoint: a round costs links, not megabytes of vocabulary written and synced."""

    base_model: str
    spec: TaskSpec
    tokenizer: Path
    provenance: dict[str, Any]  # as the run records it (checkpoints: local paths kept)

    @classmethod
    def prepare(
        cls, tokenizer_of_run: Any, spec: TaskSpec, provenance: dict[str, Any], tokenizer: Path
    ) -> Publication:
        """`tokenizer_of_run`: the run's Hugging Face tokenizer, saved once into `tokenizer`."""
        shutil.rmtree(tokenizer, ignore_errors=True)  # a killed start may have left half
        tokenizer_of_run.save_pretrained(str(tokenizer))
        for path in tokenizer.iterdir():
            path.chmod(0o644)
        return cls(provenance["model"]["name"], spec, tokenizer, provenance)

    @property
    def shared(self) -> dict[str, Any]:
        """The provenance as the adapter folder carries it: names, not this machine's paths."""
        return _shareable(self.provenance)

    def write(self, directory: Path, history: dict[str, Any]) -> None:
        """Tokenizer, README.md (the card) and training_run.json into an adapter folder."""
        for source in self.tokenizer.iterdir():
            try:
                os.link(source, directory / source.name)
            except OSError:  # a file system without hard links
                shutil.copyfile(source, directory / source.name)
                (directory / source.name).chmod(0o644)
        _write(directory / "README.md", self.card(history).encode())
        record = {**self.shared, "labels": self.spec.id2label(), "results": _results(history)}
        _write(directory / RECORD_FILE, json.dumps(record, indent=1).encode())

    def card(self, history: dict[str, Any]) -> str:
        config = self.shared["config"]
        results = _results(history)
        task = self.spec.name
        synthetic = config.get("data_dir") == EMBEDDED_DATA
        labels = self.spec.id2label()
        devices = ", ".join(results["devices"]) or "none yet"
        data_note = (
            "**The data is synthetic**: the embedded `sst2-mini` task is template sentences in "
            "SST-2 format, made to show that the system works; its scores say nothing about "
            "real sentiment. Train on a real GLUE folder (`--data`) before using this adapter."
            if synthetic
            else f"Data: the GLUE `{task}` folder `{config.get('data_dir')}`."
        )
        metric = results["metric_name"] or "metric"
        rows = [f"| before training | {_number(results['metric_before'])} |"]
        rows.append(f"| after round {results['rounds']} | {_number(results['metric_after'])} |")
        pac = config.get("method") == "pac"
        usage = (USAGE_PAC if pac else USAGE).format(
            base_model=self.base_model,
            num_labels=self.spec.num_labels,
            id2label=labels,
            label2id={name: index for index, name in labels.items()},
        )
        return (CARD_PAC if pac else CARD).format(
            base_model=self.base_model,
            task=task,
            data_note=data_note,
            metric=metric,
            rows="\n".join(rows),
            rounds=results["rounds"],
            planned=config.get("rounds", "?"),
            devices=devices,
            device_count=len(results["devices"]),
            policy=config.get("policy", "centralized"),
            seed=self.provenance["seed"],
            labels=", ".join(f"{index}: `{name}`" for index, name in labels.items()),
            usage=usage,
            config=dumps({"run": _flat(config)}).strip(),
            fingerprint=self.provenance["model"]["fingerprint"],
            versions=", ".join(f"{k} {v}" for k, v in self.provenance["versions"].items()),
        )


LORA_HEADER = """---
base_model: {base_model}
library_name: peft
pipeline_tag: text-classification
tags:
- lora
- lola-deft
- glue-{task}
---

# LoRA adapter for {base_model} on {task}

Trained with LoLa-DEFT (device-edge cooperative LoRA fine-tuning): in every round each device
trained one LoRA block, stopping backpropagation at that block, and the edge server applied
Adam to the gradients it received.

"""

CARD_BODY = """{data_note}

## Results (dev split)

| | {metric} |
|---|---|
{rows}

Rounds: {rounds} of {planned}. Devices ({device_count}): {devices}. Scheduling policy:
`{policy}`. Seed: {seed}. Labels: {labels}.

## Use

{usage}

## Configuration

```toml
{config}
```

Base model fingerprint `{fingerprint}`. Versions: {versions}.
"""

CARD = LORA_HEADER + CARD_BODY

PAC_HEADER = """---
base_model: {base_model}
library_name: lola-deft
pipeline_tag: text-classification
tags:
- parallel-adapters
- pac-plus
- lola-deft
- glue-{task}
---

# Parallel adapters (PAC+) for {base_model} on {task}

Trained with LoLa-DEFT's PAC+ method: a small side network beside the frozen encoder reads the
encoder's hidden state after every layer; each device computed those states for its own samples
once, cached them, and trained the side network on the cache; the edge server combined the
devices' gradients and applied Adam. The encoder itself is unchanged: load it as it is.

"""

CARD_PAC = PAC_HEADER + CARD_BODY

USAGE_PAC = """`parallel_adapters.safetensors` holds the side network's tensors and
`parallel_adapters.json` its shape; `lola_deft.ml.parallel_adapters.load_adapters` rebuilds it.

```python
from pathlib import Path

from transformers import AutoModel, AutoTokenizer

from lola_deft.ml.pac_training import backbone_states
from lola_deft.ml.parallel_adapters import load_adapters

ADAPTER = Path(".")  # this folder
tokenizer = AutoTokenizer.from_pretrained(ADAPTER)
encoder = AutoModel.from_pretrained("{base_model}")  # or its local folder
adapters = load_adapters(ADAPTER).eval()
batch = tokenizer(["a gripping, beautifully made film"], return_tensors="pt")
logits = adapters(backbone_states(encoder, batch), batch["attention_mask"])
print({id2label}[int(logits.argmax())])
```"""

USAGE = """```python
from peft import AutoPeftModelForSequenceClassification
from transformers import AutoTokenizer, pipeline

ADAPTER = "."  # this folder, or the hub repository it was uploaded to
model = AutoPeftModelForSequenceClassification.from_pretrained(
    ADAPTER,
    num_labels={num_labels},
    id2label={id2label},
    label2id={label2id},
    ignore_mismatched_sizes=True,  # the head comes from this adapter, whatever the base has
)
classify = pipeline(
    "text-classification", model=model, tokenizer=AutoTokenizer.from_pretrained(ADAPTER)
)
print(classify("a gripping, beautifully made film"))
```"""


EMBEDDED_DATA = "embedded:sst2-mini"


def _shareable(provenance: dict[str, Any]) -> dict[str, Any]:
    """The provenance with local paths replaced by names: a card travels to other people, and
    the folders of this machine (a home directory, a virtualenv) are neither theirs nor public."""
    config = dict(provenance["config"])
    config["model_dir"] = provenance["model"]["name"]
    data = Path(str(config.get("data_dir", "")))
    config["data_dir"] = EMBEDDED_DATA if data == EMBEDDED_TASK_DIR else data.name
    return {**provenance, "config": config}


def _results(history: dict[str, Any]) -> dict[str, Any]:
    """Metric before and after, rounds done and the devices that trained, from history.json."""
    baseline = history.get("baseline") or {}
    rounds = history.get("rounds") or []
    evaluated = [r["eval"] for r in rounds if r.get("eval")]
    devices = sorted({a["device"] for r in rounds for a in r.get("assignment", [])})
    return {
        "metric_name": baseline.get("metric_name"),
        "metric_before": baseline.get("metric"),
        "metric_after": evaluated[-1]["metric"] if evaluated else baseline.get("metric"),
        "rounds": rounds[-1]["round"] if rounds else 0,
        "devices": devices,
    }


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _flat(config: dict[str, Any]) -> dict[str, Any]:
    """The snapshot's nested LoRA settings as flat keys, as in a run file."""
    flat = {key: value for key, value in config.items() if not isinstance(value, dict)}
    for key, value in (config.get("lora") or {}).items():
        flat[f"lora_{key}"] = value
    return flat


def _write(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    path.chmod(0o644)
