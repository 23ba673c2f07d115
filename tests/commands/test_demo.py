"""``sgdetr demo``: the seeded prediction, and one-line errors for impossible options."""

import json

import pytest

from sgdetr_hf.commands import main


def test_demo_prints_top_k_windows_and_one_saliency_per_clip(capsys):
    assert main(["demo", "--num-clips", "8", "--top-k", "2", "--json"]) == 0
    prediction = json.loads(capsys.readouterr().out)
    assert len(prediction["pred_relevant_windows"]) == 2 and len(prediction["pred_saliency_scores"]) == 8


@pytest.mark.parametrize(
    "option, value", [("--top-k", "0"), ("--top-k", "-3"), ("--num-clips", "0"), ("--num-tokens", "0")]
)
def test_impossible_options_are_usage_errors(option, value, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["demo", option, value])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "Traceback" not in err and err.startswith("usage: sgdetr demo")
    assert err.strip().splitlines()[-1] == f"sgdetr demo: error: {option} must be >= 1, got {value}"
