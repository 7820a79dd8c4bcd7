"""Domain prompt templates and prompt-ensembled class embeddings from a locked text encoder.

Each class gets one embedding per template (P of them, the channels of the correlation volume):
the template filled with the class name and each synonym, encoded, averaged and L2-normalised.
With ``descriptions`` one more channel holds "<name>: <description>" (the name alone when the
vocabulary has no description). The text encoder is never trained: embeddings are computed
without gradients and cached per prompt string.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from eokit.core.errors import InputError

logger = logging.getLogger(__name__)

__all__ = ["DOMAIN_TEMPLATES", "ClassText", "PromptBank", "check_class_names",
           "vocabulary_similarity"]

#: Remote-sensing prompt templates ("{}" is the class name or a synonym).
DOMAIN_TEMPLATES: tuple[str, ...] = (
    "a satellite image of {}.",
    "an aerial photo of {}.",
    "a remote sensing image of {}.",
    "an overhead view of {}.",
    "a top-down image showing {}.",
)


@dataclass(frozen=True)
class ClassText:
    """The text of one class: its name, synonyms and a description (any may be empty)."""

    name: str
    synonyms: tuple[str, ...] = ()
    description: str = ""

    @classmethod
    def of(cls, item: Any) -> ClassText:
        """From a name, a :class:`ClassText`, or anything with name/synonyms/description."""
        if isinstance(item, ClassText):
            return item
        if isinstance(item, str):
            return cls(item)
        return cls(str(item.name), tuple(getattr(item, "synonyms", ()) or ()),
                   str(getattr(item, "description", "") or ""))


def check_class_names(names: Sequence[str], parameter: str = "classes") -> list[str]:
    """Stripped names; an InputError for an empty list, an empty name or a duplicate."""
    clean = [str(n).strip() for n in names]
    if not clean:
        raise InputError("the class list is empty", parameter=parameter)
    for raw, name in zip(names, clean, strict=True):
        if not name:
            raise InputError(f"class name {raw!r} is empty after stripping", parameter=parameter)
    seen: set[str] = set()
    for name in clean:
        key = name.lower()
        if key in seen:
            raise InputError(f"class {name!r} is listed twice", parameter=parameter)
        seen.add(key)
    return clean


def _readable(name: str) -> str:
    return name.replace("_", " ").strip()


@dataclass
class PromptBank:
    """Encodes class texts into (K, P, D) per-template embeddings with a cache.

    Args:
        encode: Text encoder callable: list of strings -> (N, D) embeddings.
        templates: Prompt templates.
        descriptions: Add the description channel.
    """

    encode: Callable[[Sequence[str]], Tensor]
    templates: tuple[str, ...] = DOMAIN_TEMPLATES
    descriptions: bool = True
    _cache: dict[str, Tensor] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.templates = tuple(self.templates)
        if not self.templates or any("{}" not in t for t in self.templates):
            raise InputError("every prompt template needs a '{}' placeholder",
                             parameter="templates")

    @property
    def num_prompts(self) -> int:
        """P: templates, plus one for descriptions."""
        return len(self.templates) + int(self.descriptions)

    def _encode(self, texts: Sequence[str]) -> Tensor:
        missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if missing:
            with torch.no_grad():
                vectors = self.encode(missing).detach().float().cpu()
            for text, vec in zip(missing, vectors, strict=True):
                self._cache[text] = F.normalize(vec, dim=-1)
        return torch.stack([self._cache[t] for t in texts])

    def prompts(self, item: ClassText) -> list[list[str]]:
        """For each channel, the strings averaged into it."""
        names = [_readable(item.name)] + [_readable(s) for s in item.synonyms if s.strip()]
        names = list(dict.fromkeys(names))
        channels = [[t.format(n) for n in names] for t in self.templates]
        if self.descriptions:
            text = f"{names[0]}: {item.description.strip()}" if item.description.strip() \
                else names[0]
            channels.append([text])
        return channels

    def __call__(self, classes: Sequence[Any]) -> Tensor:
        """(K, P, D) L2-normalised per-channel embeddings of the classes."""
        items = [ClassText.of(c) for c in classes]
        check_class_names([i.name for i in items])
        every = [self.prompts(item) for item in items]
        self._encode([s for channels in every for ch in channels for s in ch])  # one batch
        out = []
        for channels in every:
            flat = [s for ch in channels for s in ch]
            vectors = self._encode(flat)
            start, rows = 0, []
            for ch in channels:
                rows.append(F.normalize(vectors[start:start + len(ch)].mean(0), dim=-1))
                start += len(ch)
            out.append(torch.stack(rows))
        return torch.stack(out)

    def ensembled(self, classes: Sequence[Any]) -> Tensor:
        """(K, D) prompt-ensembled class embeddings (mean over channels, normalised)."""
        return F.normalize(self(classes).mean(1), dim=-1)


def vocabulary_similarity(bank: PromptBank, requested: Sequence[Any],
                          trained: Sequence[Any], *, warn_below: float = 0.5
                          ) -> list[dict[str, Any]]:
    """Nearest training class of each requested name by ensembled text embedding.

    Returns one row per requested class: ``class``, ``nearest_trained``, ``similarity``
    (cosine), ``seen`` (the name is a training class) and ``warning`` (far from anything learnt).
    """
    req = [ClassText.of(c) for c in requested]
    train = [ClassText.of(c) for c in trained]
    if not train:
        return [{"class": r.name, "nearest_trained": "", "similarity": math.nan, "seen": False,
                 "warning": "no training vocabulary recorded"} for r in req]
    sim = bank.ensembled(req) @ bank.ensembled(train).t()
    names = {t.name.lower() for t in train}
    rows = []
    for i, r in enumerate(req):
        j = int(sim[i].argmax())
        value = float(sim[i, j])
        seen = r.name.lower() in names
        warning = "" if seen or value >= warn_below else (
            f"far from every training class (cosine {value:.2f} < {warn_below}); "
            "expect a guess")
        rows.append({"class": r.name, "nearest_trained": train[j].name,
                     "similarity": round(value, 4), "seen": seen, "warning": warning})
    return rows


def class_texts(names: Sequence[str], vocabulary: Mapping[str, Any] | None) -> list[ClassText]:
    """ClassText for each name, with synonyms/description from a vocabulary when it has them."""
    vocab = {k.lower(): v for k, v in (vocabulary or {}).items()}
    out = []
    for name in names:
        entry = vocab.get(name.lower())
        out.append(ClassText(name) if entry is None else
                   ClassText(name, tuple(getattr(entry, "synonyms", ()) or ()),
                             str(getattr(entry, "description", "") or "")))
    return out


__all__ += ["class_texts"]
