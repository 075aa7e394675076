"""Config loading: defaults, YAML, dotted overrides, and one clear line per invalid input."""

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trainables.config import TrialConfig, apply_overrides
from trainables.errors import ConfigError
from trainables.resolve import load_trial_config, parse_trial_config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "trial.yaml"
    path.write_text(text)
    return path


def test_empty_file_gives_the_documented_defaults(tmp_path: Path) -> None:
    config = load_trial_config(write(tmp_path, ""))
    assert config == TrialConfig()
    assert (config.method, config.data.name, config.model.name) == (
        "dense",
        "digits",
        "resnet18_cifar",
    )
    assert config.train.momentum == 0.9 and config.settings is None  # dense has no section
    imp = parse_trial_config({"method": "imp"})
    assert imp.settings.rate == 0.2 and imp.settings.rewind == "init"  # the method's defaults


def test_yaml_values_and_dotted_overrides_are_applied(tmp_path: Path) -> None:
    path = write(tmp_path, "method: imp\ntrain:\n  epochs: 3\n  lr: 0.1\n")
    config = load_trial_config(path, ["train.lr=0.05", "imp.rewind=epoch:1", "prune.reinit=true"])
    assert config.method == "imp"
    assert config.train.epochs == 3
    assert config.train.lr == 0.05
    assert config.settings.rewind_epoch == 1
    assert config.prune.reinit is True


def test_overrides_do_not_mutate_their_input() -> None:
    raw = {"train": {"lr": 0.1}}
    apply_overrides(raw, ["train.lr=0.2"])
    assert raw == {"train": {"lr": 0.1}}


@pytest.mark.parametrize(
    ("text", "overrides", "expected_fragments"),
    [
        ("method: dens", [], ["'method'", "unknown method 'dens'", "did you mean 'dense'",
                              "gmp", "rigl", "set", "snip"]),
        ("method: snp", [], ["unknown method 'snp'", "did you mean 'snip'"]),
        ("train:\n  lrr: 0.1", [], ["'train.lrr'", "did you mean 'lr'"]),
        ("trian: {}", [], ["'trian'", "did you mean 'train'"]),
        ("train:\n  epochs: 0", [], ["'train.epochs'", "greater than or equal to 1"]),
        ("prune:\n  target_sparsity: 1.0", [], ["'prune.target_sparsity'", "less than 1"]),
        ("prune:\n  target_sparsity: -0.1", [], ["'prune.target_sparsity'", "greater than"]),
        (
            "data:\n  name: cifar",
            [],
            ["'data.name'", "unknown dataset 'cifar'", "digits", "flowers102"],
        ),
        ("model:\n  name: resnet19", [], ["'model.name'", "resnet18_cifar"]),
        ("prune:\n  scorer: snp", [], ["'prune.scorer'", "was renamed", "method: snip"]),
        ("method: snip\nprune:\n  score_batches: 3", [], ["'prune.score_batches'",
                                                          "moved to snip.score_batches"]),
        ("method: imp\nimp:\n  dense_checkpoint: x", [], ["'imp.dense_checkpoint'",
                                                          "moved to dense_model.checkpoint"]),
        ("dense_cache: /x", [], ["'dense_cache'", "moved to dense_model.cache"]),
        ("method: dense\nimp:\n  rounds: 3", [], ["section 'imp' configures method imp",
                                                  "method is dense"]),
        ("method: snip\nsynflow: {iterations: 3}", [], ["section 'synflow'", "method is snip"]),
        ("method: random\nrandom: {}", [], ["method random has no settings section"]),
        ("method: gmp\ngmmp: {}", [], ["unknown config key 'gmmp'", "did you mean 'gmp'"]),
        ("method: snip\nsnip:\n  batchnorm_mode: test", [], ["'snip.batchnorm_mode'"]),
        ("method: gmp\ngmp:\n  start: 0.9\n  end: 0.5", [], ["gmp", "must not be after end"]),
        ("method: rigl\nprune:\n  allocation: lamp", [], ["'prune.allocation'",
                                                          "does not apply to method rigl"]),
        # Fields the method would ignore are refused, not silently dropped.
        ("method: imp\nprune:\n  target_sparsity: 0.9", [],
         ["prune.target_sparsity is ignored by method imp", "imp.schedule: iterative"]),
        ("method: imp\nimp:\n  schedule: oneshot\n  rounds: 3", [],
         ["imp.rounds is ignored by method imp", "oneshot"]),
        ("method: imp\nimp:\n  lr_rewind: false", [], ["imp.lr_rewind is ignored"]),
        ("method: gmp\nprune:\n  reinit: true", [], ["prune.reinit is ignored by method gmp"]),
        ("method: gmp\ngmp:\n  retrain_epochs: 3", [], ["gmp.retrain_epochs is ignored",
                                                        "start_from: scratch"]),
        ("method: dense\nprune:\n  allocation: erk", [], ["prune.allocation is ignored"]),
        ("method: snip\ndense_model:\n  checkpoint: x", [],
         ["dense_model.checkpoint is ignored by method snip"]),
        ("train:\n  lr: '0.1'", [], ["'train.lr'", "valid number"]),
        ("train:\n  epochs: 2.5", [], ["'train.epochs'", "valid integer"]),
        ("method: imp\nimp:\n  rewind: epoch:x", [], ["'imp.rewind'", "init, none, epoch:K"]),
        ("method: imp\nimp:\n  rewind: epoch:30", [], ["imp.rewind", "below train.epochs"]),
        ("train: 5", [], ["'train'", "valid dictionary"]),
        ("", ["train.epochs=-1"], ["'train.epochs'"]),
        ("", ["train.nope=1"], ["'train.nope'"]),
        ("", ["train.lr"], ["expected key.path=value"]),
        ("method: dense", ["method.x=1"], ["'method' is a value"]),
        ("- a\n- b", [], ["expected a mapping"]),
        ("train: [unclosed", [], ["malformed YAML", "line 1"]),
        (
            "data: {name: digits, val_size: 100}",
            [],
            ["data.val_size does not apply to dataset 'digits'", "cifar10, cifar100"],
        ),
        ("data: {name: cifar10, storage: stream}", [], ["data.storage", "imagefolder"]),
        (
            "data: {name: imagefolder, split_fractions: [0.8, 0.1]}",
            [],
            ["'data.split_fractions'", "three fractions"],
        ),
        ("data: {name: cifar10, val_size: 1.5}", [], ["fraction >= 1"]),
        ("data: {name: cifar10, crop: zoom}", [], ["'data.crop'", "'random_resized'"]),
        (
            "model: {name: 'torchvision:mobilenet_v3_smal'}",
            [],
            ["'model.name'", "did you mean 'mobilenet_v3_small'"],
        ),
        (
            "model: {name: 'torchvision:resnet50', width: 16}",
            [],
            ["model.width does not apply to torchvision:resnet50"],
        ),
    ],
)
def test_invalid_configs_give_one_line_naming_the_field(
    tmp_path: Path, text: str, overrides: list[str], expected_fragments: list[str]
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as raised:
        load_trial_config(path, overrides)
    message = str(raised.value)
    assert "\n" not in message
    for fragment in expected_fragments:
        assert fragment in message, message


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_trial_config(tmp_path / "absent.yaml")


# Keys drawn from the real schema (and typos of it) so the fuzzer reaches nested validation.
_KEYS = st.sampled_from(
    [
        "method",
        "seed",
        "data",
        "model",
        "train",
        "prune",
        "imp",
        "gmp",
        "rigl",
        "dense_model",
        "name",
        "epochs",
        "lr",
        "target_sparsity",
        "rewind",
        "width",
        "image_size",
        "scorer",
        "x",
        "trian",
    ]
)
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=True),
    st.text(max_size=12),
    st.sampled_from(["dense", "imp", "snip", "gmp", "rigl", "epoch:3", "digits"]),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(_KEYS, children, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(_KEYS, _VALUES, max_size=5))
def test_fuzzed_configs_raise_only_config_errors(raw: dict) -> None:
    try:
        parse_trial_config(raw)
    except ConfigError as error:
        assert "\n" not in str(error)
