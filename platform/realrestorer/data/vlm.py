"""The VLM check: Qwen2.5-VL judges which of the nine degradations a pair's input shows, and how severe it is.

The judge does not generate text. It asks a question and scores each allowed answer by the sum of its
token log-likelihoods given the image and the question, all answers in one forward pass. A verdict is
therefore always one of the candidates, and it comes with a probability (the softmax over the answers'
log-likelihoods). A pair's label is what the builder says it is: the task of a synthetic pair, of the most
severe step of a mixture, or the task a real pair was filed under.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from realrestorer.data.config import DataConfig
from realrestorer.degrade import TASKS

KEY = "data.vlm_path"
SEVERITIES = ("mild", "moderate", "severe")


def question(subject: str, answers: Sequence[str]) -> str:
    """`subject` followed by the one-word answers allowed, e.g. '... Answer with one word: mild, moderate or severe.'"""
    return f"{subject} Answer with one word: {', '.join(answers[:-1])} or {answers[-1]}."


TASK_QUESTION = question("Which degradation does this photo show?", tuple(TASKS))
SEVERITY_QUESTION = question("How severe is the degradation in this photo?", SEVERITIES)


def severity_label(severity: float) -> str:
    """An engine severity in [0, 1] as a word: the lower third is mild, the middle moderate, the upper severe."""
    if not 0.0 <= severity <= 1.0:
        raise ValueError(f"severity must lie in [0, 1], got {severity}")
    return SEVERITIES[min(int(severity * 3), 2)]


def pair_label(task: str, params: dict[str, Any]) -> tuple[str, str | None]:
    """The (task, severity) a pair should be judged as; severity is None where the data does not know it (real pairs).

    A proxy pair is a mixture followed by a web re-encoding chain, and is labelled by its mixture. A mixture is
    labelled by its most severe step, as its prompt is (`synthesize.prompt_for`).
    """
    if "chain" in params:
        first = params["chain"][0]
        return pair_label(first["task"], first)
    if task == "mixed":
        strongest = max(params["steps"], key=lambda step: step["severity"])
        return strongest["task"], severity_label(strongest["severity"])
    severity = params.get("severity")
    return task, None if severity is None else severity_label(severity)


@dataclass(frozen=True)
class Verdict:
    """What the judge says of one image."""

    task: str
    task_prob: float
    severity: str


class DegradationJudge:
    """Qwen2.5-VL answering two multiple-choice questions about an image: which of the nine tasks, and how severe."""

    def __init__(self, uri: str, key: str = KEY, device: str | None = None):
        import torch

        from realrestorer.model.text import load_qwen_vl

        self.processor, model = load_qwen_vl(uri, key)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.to(self.device).eval().requires_grad_(False)
        self._end_id = self.processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
        self._pad_id = self.processor.tokenizer.pad_token_id or 0

    def loglikelihoods(self, image_HW3: np.ndarray, items: Sequence[tuple[str, Sequence[str]]]) -> list[np.ndarray]:
        """For each (question, answers): the summed token log-likelihood of every answer, given the image and question.

        Every answer of every question is one row of a single right-padded batch, each row with its own copy
        of the image.
        """
        import torch

        from realrestorer.model.text import chat_prompt

        prompts = [chat_prompt(self.processor, text, with_image=True) for text, _ in items]
        batch = self.processor(text=prompts, images=[image_HW3] * len(items), padding=True, return_tensors="pt")
        num_patches = int(batch["image_grid_thw"][0].prod())
        # An answer closes the assistant's turn: scoring the end token keeps "noise" from also standing for
        # every longer answer that starts with it.
        answer_ids = {a: [*self.processor.tokenizer(a, add_special_tokens=False)["input_ids"], self._end_id]
                      for _, answers in items for a in answers}
        rows = []  # (prompt ids, prompt token types, answer ids)
        for i, (_, answers) in enumerate(items):
            keep = batch["attention_mask"][i].bool()
            rows += [(batch["input_ids"][i][keep], batch["mm_token_type_ids"][i][keep], answer_ids[a]) for a in answers]
        length = max(len(prompt) + len(answer) for prompt, _, answer in rows)
        input_ids = torch.full((len(rows), length), self._pad_id, dtype=torch.long)
        attention, token_types = torch.zeros_like(input_ids), torch.zeros_like(input_ids)
        row_of, position, target = [], [], []
        for r, (prompt, types, answer) in enumerate(rows):
            n, m = len(prompt), len(answer)
            input_ids[r, :n], input_ids[r, n:n + m] = prompt, torch.tensor(answer)
            attention[r, :n + m], token_types[r, :n] = 1, types
            # The output at position t predicts token t + 1.
            row_of += [r] * m
            position += range(n - 1, n - 1 + m)
            target += answer
        with torch.inference_mode():
            hidden_RLD = self.model.model(
                input_ids=input_ids.to(self.device), attention_mask=attention.to(self.device),
                mm_token_type_ids=token_types.to(self.device),
                pixel_values=batch["pixel_values"][:num_patches].repeat(len(rows), 1).to(self.device),
                image_grid_thw=batch["image_grid_thw"][:1].repeat(len(rows), 1).to(self.device), use_cache=False,
            ).last_hidden_state
            # The LM head only where an answer token is predicted: full logits would be rows × length × vocab.
            logp_TV = self.model.lm_head(hidden_RLD[row_of, position]).float().log_softmax(-1)
            token_logp = logp_TV[torch.arange(len(target)), torch.tensor(target, device=self.device)]
            per_row = torch.zeros(len(rows), device=self.device).index_add_(0, torch.tensor(row_of, device=self.device), token_logp)
        sizes = [len(answers) for _, answers in items]
        return [part.cpu().numpy() for part in per_row.split(sizes)]

    def __call__(self, image_HW3: np.ndarray) -> Verdict:
        """The most likely of the nine tasks, its probability among them, and the most likely severity."""
        task_ll, severity_ll = self.loglikelihoods(image_HW3, [(TASK_QUESTION, tuple(TASKS)), (SEVERITY_QUESTION, SEVERITIES)])
        probs = np.exp(task_ll - task_ll.max())
        probs /= probs.sum()
        best = int(np.argmax(task_ll))
        return Verdict(task=list(TASKS)[best], task_prob=float(probs[best]), severity=SEVERITIES[int(np.argmax(severity_ll))])


def check_pairs(judge: DegradationJudge, rows: list[dict[str, Any]], cfg: DataConfig,
                rejections: Counter) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Judge the rows of kinds `cfg.vlm_kinds`: record each verdict in its row, count agreement, and drop the
    rows that disagree when `cfg.vlm_reject_mismatch` is set. Returns the rows kept and the shard's VLM stats."""
    from realrestorer.data.shards import decode_image

    kept = []
    stats: dict[str, Any] = {"num_checked": 0, "num_agreed": 0, "num_severity_checked": 0, "num_severity_agreed": 0,
                             "num_rejected": 0, "confusion": {}}
    for row in rows:
        if row["kind"] not in cfg.vlm_kinds:
            kept.append(row)
            continue
        # The stored input, compression included, is what the judge sees.
        verdict = judge(decode_image(row["degraded"]))
        task, severity = pair_label(row["task"], row["params"])
        agrees = verdict.task == task
        stats["num_checked"] += 1
        stats["num_agreed"] += int(agrees)
        if severity is not None:
            stats["num_severity_checked"] += 1
            stats["num_severity_agreed"] += int(verdict.severity == severity)
        predicted = stats["confusion"].setdefault(task, {})
        predicted[verdict.task] = predicted.get(verdict.task, 0) + 1
        if cfg.vlm_reject_mismatch and not agrees:
            rejections["vlm_mismatch"] += 1
            stats["num_rejected"] += 1
            continue
        kept.append({**row, "vlm_task": verdict.task, "vlm_severity": verdict.severity,
                     "scores": {**row["scores"], "vlm_task_prob": verdict.task_prob, "vlm_agrees": float(agrees)}})
    return kept, stats


def summarize(cfg: DataConfig, shard_stats: list[dict[str, Any] | None]) -> dict[str, Any]:
    """The manifest's `vlm_check`: totals over the shards' VLM stats (None for shards built without the judge).

    Agreement counts every checked pair, including those then rejected for disagreeing.
    """
    totals: Counter = Counter()
    confusion: dict[str, Counter] = {}
    for stats in filter(None, shard_stats):
        totals.update({k: v for k, v in stats.items() if k.startswith("num_")})
        for task, predicted in stats["confusion"].items():
            confusion.setdefault(task, Counter()).update(predicted)

    def rate(agreed: str, checked: str) -> float | None:
        return totals[agreed] / totals[checked] if totals[checked] else None

    return {
        "path": cfg.vlm_path,
        "kinds": cfg.vlm_kinds,
        "num_checked": totals["num_checked"],
        "agreement": rate("num_agreed", "num_checked"),
        "severity_agreement": rate("num_severity_agreed", "num_severity_checked"),
        "num_rejected": totals["num_rejected"],
        "confusion": {task: dict(sorted(predicted.items())) for task, predicted in sorted(confusion.items())},
    }


def check_checkpoint(uri: str) -> None:
    """A one-line error naming `data.vlm_path` when `uri` lacks a Qwen2.5-VL file; downloads nothing."""
    from realrestorer.model.text import QWEN_VL_FILES
    from realrestorer.model.weights import check_files

    check_files(uri, KEY, QWEN_VL_FILES)


__all__ = [
    "SEVERITIES",
    "SEVERITY_QUESTION",
    "TASK_QUESTION",
    "DegradationJudge",
    "Verdict",
    "check_checkpoint",
    "check_pairs",
    "pair_label",
    "question",
    "severity_label",
    "summarize",
]
