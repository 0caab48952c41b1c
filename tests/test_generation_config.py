"""Generation settings as run settings: stored, validated, and used by the clean stage."""
import pytest

from db.token_arrays import pack, unpack
from orchestrator.run_config import RunConfig, StoredRunConfig
from orchestrator.server_check import same_model
from workers.cleaning import CleaningSettings
from workers.generation import LOOP_ABORT_SETTINGS, GenerationSettings


def test_runs_stored_with_one_url_still_load():
    config = RunConfig.model_validate({"generator": "sglang", "url": "http://gpu:30000"})
    assert config.urls == ["http://gpu:30000"] and "url" not in config.model_dump()


def test_generation_settings_round_trip_through_the_run_config():
    config = RunConfig(urls=["http://a", "http://b"], generation={**GenerationSettings().__dict__, "loop_abort": None})
    stored = RunConfig.model_validate(config.model_dump())
    assert stored.generation_settings().loop_abort is None and stored.urls == ["http://a", "http://b"]
    assert RunConfig(urls=["http://a"]).generation_settings().loop_abort == LOOP_ABORT_SETTINGS


def test_bad_generation_settings_are_refused_before_the_run_exists():
    with pytest.raises(ValueError, match="unknown keys"):
        RunConfig(urls=["http://a"], generation={"stream_every": 3})
    with pytest.raises(ValueError, match="stream_interval"):
        RunConfig(urls=["http://a"], generation={"stream_interval": 0})
    with pytest.raises(ValueError, match="needs --url"):
        RunConfig(generator="openai")


def test_an_answer_aborted_for_a_loop_is_cleaned_with_the_abort_thresholds():
    config = RunConfig(urls=["http://a"])
    assert config.cleaning_settings({"type": "loop", "onset": 10, "period": 400}) == LOOP_ABORT_SETTINGS
    assert config.cleaning_settings({"type": "stop", "matched": 151645}) == CleaningSettings()
    assert config.cleaning_settings(None) == CleaningSettings()
    assert LOOP_ABORT_SETTINGS.min_repeats_long_unit == 4 < CleaningSettings().min_repeats_long_unit


def test_a_stored_config_makes_each_derived_setting_once_and_the_same_as_a_fresh_one():
    fresh = RunConfig(urls=["http://a"], sampling={**RunConfig(urls=["http://a"]).sampling, "temperature": 0.3})
    stored = StoredRunConfig.model_validate_json(fresh.model_dump_json())
    loop = {"type": "loop", "onset": 10, "period": 400}
    for derive in (lambda c: c.sampling_params(), lambda c: c.generation_settings(), lambda c: c.evaluation_settings(),
                   lambda c: c.cleaning_settings(None), lambda c: c.cleaning_settings(loop)):
        assert derive(stored) is derive(stored) and derive(stored) == derive(fresh)
    assert stored.cleaning_settings(loop) == LOOP_ABORT_SETTINGS != stored.cleaning_settings({"type": "stop"})


@pytest.mark.parametrize(("name", "path", "same"), [
    ("Qwen/Qwen3-8B", "Qwen/Qwen3-8B", True), ("Qwen/Qwen3-8B", "/models/qwen3-8b/", True),
    ("Qwen/Qwen3-8B", "Qwen/Qwen3-14B", False), ("Qwen3-8B", "/data/Qwen3-8B-FP8", False)])
def test_model_names_match_by_their_last_component(name, path, same):
    assert same_model(name, path) is same


def test_packed_token_arrays_round_trip():
    assert unpack(pack([0, 151645, -1], "i"), "i") == [0, 151645, -1]
    assert unpack(pack([-0.5, -1.25], "f"), "f") == [-0.5, -1.25]
    assert len(pack(range(1000), "i")) == 4000  # 4 bytes a token
