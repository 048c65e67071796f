"""The cell record: one typed definition of a line of ``OUT/results.jsonl``.

The runner builds every record as a :class:`CellRecord` and stores ``record.to_dict()``; reports,
``compare`` and tests read records back through :meth:`CellRecord.from_dict`, which upgrades older
schema versions, so they see one shape whatever version wrote a store::

    record = CellRecord(domain="image", cell_key=..., ...)   # unknown keyword -> TypeError
    line = record.to_dict()                                    # JSON-ready, with schema_version
    same = CellRecord.from_dict(line)                          # any stored version -> current

Versions: 1 = the records written before this module existed (no ``domain``); 2 = v1 + ``domain``.
A key the schema does not know survives a round trip in :attr:`CellRecord.extra`.

Inside ``defense_info`` (a defense's own fields) two names are standard, for every defense that
inspects models (see :class:`~ebyd_bench.benchmark.methods.DefenseResult`): ``model_score`` (one
number per model, higher = more likely backdoored) and ``label_scores`` (one suspicion score per
class). :data:`DETECTION_FIELDS` names them; the grid statistics read them.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Mapping

SCHEMA_VERSION = 2

#: the modalities a record's ``domain`` names today (one grid domain each; a new modality adds one)
DOMAINS = ("image", "text")

#: below this ``asr_before`` a victim's backdoor counts as not implanted (e.g. Adv under random crops,
#: docs/methods.md §3.3-6): the run warns and every table marks the cell, since any defense looks perfect on it
WEAK_BACKDOOR_ASR = 0.5


@dataclass(kw_only=True)
class CellRecord:
    """One finished grid cell: which experiment, its numbers, and where they came from."""

    schema_version: int = SCHEMA_VERSION  # of this record's shape; always the current one in memory
    domain: str  # modality of the grid's dataset: "image" or "text" (DOMAINS)
    # ---- identity and keys
    cell_key: str  # hash of everything that determines this cell (its cache key)
    cache_key: str  # key of the poisoned model the cell defends
    config_name: str  # the grid's name
    config_hash: str  # hash of the grid's OUT/config.yaml
    label: str  # "attack × exposure × defense" as shown in logs
    # ---- setting
    dataset: str  # registered dataset name
    dataset_note: str  # how the data deviates from the paper's ("" if not)
    model: str  # registered victim model name
    model_note: str  # every deviation of the setting from the paper's, "; "-joined
    model_params: dict[str, Any]  # the victim's constructor parameters
    recipe: str  # name of the training recipe
    seed: int  # the cell's seed (splits, poisoning, training, methods)
    eval_test_size: int  # test samples the metrics are measured on
    # ---- methods
    attack: str  # registered attack name ("none" = clean control)
    attack_params: dict[str, Any]  # the attack's parameters
    target: int | None  # the attack's target label
    poison_rate: float  # share of the training set poisoned
    exposure: str | None  # registered exposure name, None without one
    exposure_label: str | None = None  # shown name of the exposure (its label, else its name); None without one
    defense: str  # registered defense name ("none" = no defense)
    defense_label: str  # shown name of the defense (its label, else its name)
    defense_params: dict[str, Any]  # the defense's parameters
    defense_category: str  # "none", "removal", "input_filtering" or "model_inspection"
    defense_uses_exposure: bool  # the defense uses the exposed model when the grid provides one
    defense_returns_model: bool | None = None  # CA/ASR are the defended model's (None: v1 record from before)
    defense_info: dict[str, Any]  # the defense's own fields (DETECTION_FIELDS among them), harness additions
    # ---- metrics of the deployed model or pipeline (after the defense)
    ca: float  # clean accuracy on the evaluated test subset
    ca_nt: float | None = None  # clean accuracy without the target class
    asr: float | None = None  # attack success rate on triggered non-target inputs (None for a clean model)
    ca_prior_matched: float | None = None  # CA at the prior-matched operating point (with triggered inputs)
    asr_prior_matched: float | None = None  # ASR at the prior-matched operating point (with triggered inputs)
    ftr: float | None = None  # text: false trigger rate on the attack's negative inputs, if it has any
    ca_before: float  # CA of the undefended model
    asr_before: float | None = None  # ASR of the undefended model
    # ---- the exposure of the poisoned model (only with an exposure)
    exposure_key: str | None = None  # cache key of the exposed model
    exposed_label: int | None = None  # backdoor label read off the exposed model
    exposed_label_share: float | None = None  # share of D_d predicted as that label
    exposed_ca: float | None = None  # test CA of the exposed model
    exposed_asr: float | None = None  # test ASR of the exposed model
    exposure_stop_reason: str | None = None  # why the exposure stopped
    exposure_trace: list[dict[str, Any]] | None = None  # per step: the method's values and test CA/ASR
    bem: float | None = None  # backdoor exposure metric over the trajectory
    bem_0: float | None = None  # BEM of the unexposed model (step 0)
    # ---- provenance
    train_cached: bool  # the poisoned model came from the cache
    timings: dict[str, float]  # seconds per stage (train, expose, defend, evaluate, diagnostics)
    hardware: dict[str, Any]  # device, CPU, threads
    provenance: dict[str, Any]  # versions, git commit, start time, hardware
    # ---- keys this schema does not know (written by a newer or patched runner), kept verbatim
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.schema_version != SCHEMA_VERSION:
            raise ValueError(f"a CellRecord is schema version {SCHEMA_VERSION}, not {self.schema_version}; "
                             "read older records with CellRecord.from_dict")
        if not isinstance(self.domain, str) or not self.domain:
            raise ValueError(f"record {self.cell_key}: domain must be a modality name such as 'image', "
                             f"not {self.domain!r}")
        clash = sorted(set(self.extra) & _FIELD_SET)
        if clash:
            raise ValueError(f"record {self.cell_key}: extra keys {clash} are schema fields")

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready record as stored: every field, except the optional ones a record omits when
        unset (the exposure fields of a cell without an exposure, metrics that were not measured),
        plus :attr:`extra`'s keys."""
        out: dict[str, Any] = {}
        for name in RECORD_FIELDS:
            value = getattr(self, name)
            if value is None and (name in OMITTED_WHEN_NONE or (name in EXPOSURE_FIELDS and self.exposure_key is None)):
                continue
            out[name] = value
        out.update(self.extra)
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> "CellRecord":
        """A stored record of any schema version (no ``schema_version``: 1) as a current CellRecord.

        Unknown keys go to :attr:`extra`; a missing required field is a ValueError naming it."""
        data = dict(raw)
        version = data.pop("schema_version", 1)
        if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= SCHEMA_VERSION:
            raise ValueError(f"record {data.get('cell_key')}: schema_version {version!r} is not one this "
                             f"ebyd-bench reads (1..{SCHEMA_VERSION}); a newer ebyd-bench wrote it?")
        if version == 1:
            data = _upgrade_v1(data)
        missing = [n for n in REQUIRED_FIELDS if n not in data]
        if missing:
            raise ValueError(f"record {data.get('cell_key')}: missing field(s) {', '.join(missing)}")
        known = {k: data.pop(k) for k in list(data) if k in _FIELD_SET}
        return cls(**known, extra=data)


#: the v1 runner ran a grid as text exactly when its dataset was registered as a text dataset, and the
#: only ones while v1 was written were these four (adapters/text_data.py); v1 is closed, so is this set
_V1_TEXT_DATASETS = frozenset({"sst2", "imdb", "agnews", "twitter"})


def _upgrade_v1(data: dict[str, Any]) -> dict[str, Any]:
    """v1 -> v2 (the only place that infers anything about an old record).

    * ``domain``: "text" for the v1 text datasets, else "image". This mirrors the v1 runner's own choice
      (its ``dataset_domain``), which read the dataset's registration: every v1 text record is on one of
      ``_V1_TEXT_DATASETS``; a plug-in text dataset, had one existed, would be read as image.
    * NC's detection scores under the standard ``defense_info`` names (v1 NC wrote only its own):
      ``model_score`` = the anomaly index without an exposure, −(mask L1 of the exposed label) with one;
      ``label_scores`` = ``nc_label_scores`` (plain NC only). Values are copied, never recomputed, so
      re-reporting an old store gives the numbers it gave before.
    """
    out = dict(data)
    out.setdefault("domain", "text" if out.get("dataset") in _V1_TEXT_DATASETS else "image")
    info = out.get("defense_info")
    if out.get("defense") == "nc" and isinstance(info, dict):
        info = dict(info)
        if out.get("exposure") is None:
            info.setdefault("model_score", info.get("anomaly_index"))
            info.setdefault("label_scores", info.get("nc_label_scores"))
        else:
            l1 = info.get("nc_label_l1")
            info.setdefault("model_score", None if l1 is None else -l1)
        out["defense_info"] = info
    return out


#: every top-level key of a stored record, in the order to_dict writes them ("extra" is not a key)
RECORD_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(CellRecord) if f.name != "extra")
#: keys every stored record has (after upgrading)
REQUIRED_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(CellRecord)
                                         if f.default is MISSING and f.default_factory is MISSING)
#: metrics of the deployed model or pipeline, measured on the test subset (``*_before``: undefended)
METRIC_FIELDS = ("ca", "ca_nt", "asr", "ca_prior_matched", "asr_prior_matched", "ftr")
BEFORE_FIELDS = ("ca_before", "asr_before")
#: fields of the exposure a cell was defended with; a cell without an exposure has none of them
EXPOSURE_FIELDS = ("exposure_key", "exposed_label", "exposed_label_share", "exposed_ca", "exposed_asr",
                   "exposure_stop_reason", "exposure_trace", "bem", "bem_0")
#: the exposure's numbers (a label, a share, test CA/ASR and BEM)
EXPOSURE_NUMBERS = ("exposed_label", "exposed_label_share", "exposed_ca", "exposed_asr", "bem", "bem_0")
#: keys written only when set: metrics not measured for every cell, and the flag v1 records may lack
OMITTED_WHEN_NONE = frozenset({"ca_prior_matched", "asr_prior_matched", "ftr", "defense_returns_model"})
#: the numbers a run is judged by, compared between runs by ``ebyd-bench compare``
HEADLINE_METRICS = ("ca", "asr", "bem", "exposed_ca", "exposed_asr")
#: what makes two records the same experiment when their cell keys differ (a deliberate version bump)
IDENTITY_FIELDS = ("dataset", "model", "model_params", "attack", "attack_params", "exposure", "defense",
                   "defense_params", "seed")
#: standard ``defense_info`` names of model-inspection defenses: one score per model (higher = more
#: likely backdoored) and one suspicion score per label (index = class)
MODEL_SCORE, LABEL_SCORES = "model_score", "label_scores"
DETECTION_FIELDS = (MODEL_SCORE, LABEL_SCORES)

_FIELD_SET = frozenset(RECORD_FIELDS)
for _group in (METRIC_FIELDS, BEFORE_FIELDS, EXPOSURE_FIELDS, EXPOSURE_NUMBERS, OMITTED_WHEN_NONE, HEADLINE_METRICS,
               IDENTITY_FIELDS):
    assert _FIELD_SET.issuperset(_group), set(_group) - _FIELD_SET
