"""app.py start-up: where each setting comes from, and what it refuses or warns about."""

import logging
import tempfile
from pathlib import Path

import pytest

from webui.compose import kernel_cache_folder, warn_if_exposed
from webui.settings import load_settings, parse_args, resolve_cpu_workers, resolve_gpu_workers


@pytest.fixture(autouse=True)
def no_secrets_in_environment(monkeypatch):
    monkeypatch.delenv("LAMA_API_TOKEN", raising=False)
    monkeypatch.delenv("LAMA_AUTH", raising=False)


def settings_from(*argv):
    return load_settings(parse_args(list(argv)))


def write_config(tmp_path, text, name="site.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_defaults_come_from_configs_default_yaml():
    settings = settings_from()
    assert (settings.host, settings.port) == ("127.0.0.1", 7860)
    assert (settings.model, settings.device, settings.precision) == (None, "auto", "auto")
    assert (settings.outputs_dir, settings.logs_dir) == ("outputs", "logs")
    assert settings.queue_capacity == 64
    assert settings.max_pixels == 4096 * 4096
    assert (settings.api_token, settings.auth) == (None, None)
    # balanced is the default preset
    assert settings.preset == "balanced"
    assert (settings.gpu_memory_fraction, settings.model_max_side) == (0.7, 2560)


@pytest.mark.parametrize(("preset", "fraction", "max_side"),
                         [("fast", 0.4, 1280), ("balanced", 0.7, 2560), ("hd", 1.0, None)])
def test_presets_set_the_gpu_share_and_the_model_size_bound(preset, fraction, max_side):
    settings = settings_from("--preset", preset)
    assert settings.preset == preset
    assert settings.gpu_memory_fraction == fraction
    assert settings.model_max_side == max_side


def test_the_gpu_share_flag_wins_over_the_preset_and_keeps_its_model_size_bound():
    """Replicas sharing one GPU split the card without changing what each repairs."""
    settings = settings_from("--gpu-memory-fraction", "0.45")
    assert settings.gpu_memory_fraction == 0.45 and settings.model_max_side == 2560


@pytest.mark.parametrize("value", ["0", "1.5", "half"])
def test_a_bad_gpu_share_flag_is_refused_by_the_parser(value, capsys):
    with pytest.raises(SystemExit):
        settings_from("--gpu-memory-fraction", value)
    assert "at most 1" in capsys.readouterr().err


def test_gpu_workers_default_to_auto_two_on_cuda_one_on_the_cpu(tmp_path):
    settings = settings_from()
    assert settings.gpu_workers == "auto"
    assert resolve_gpu_workers(settings.gpu_workers, on_cuda=True) == 2
    assert resolve_gpu_workers(settings.gpu_workers, on_cuda=False) == 1
    assert settings_from("--gpu-workers", "3").gpu_workers == 3
    assert resolve_gpu_workers(3, on_cuda=False) == 3  # a number is taken as it is, anywhere
    assert settings_from("--config", write_config(tmp_path, "gpu_workers: 4\n")).gpu_workers == 4


@pytest.mark.parametrize(("flag", "value", "least"), [("--gpu-workers", value, 1) for value in ("0", "-1", "two", "1.5")]
                         + [("--cpu-workers", value, 0) for value in ("-1", "two", "1.5")])
def test_a_bad_worker_count_flag_is_refused_by_the_parser(flag, value, least, capsys):
    with pytest.raises(SystemExit):
        settings_from(flag, value)
    assert f"'auto' or a whole number of at least {least}" in capsys.readouterr().err


@pytest.mark.parametrize("text", ["gpu_workers: 0\n", "gpu_workers: many\n", "gpu_workers: true\n",
                                  "cpu_workers: -2\n", "cpu_workers: many\n", "cpu_workers: true\n"])
def test_a_bad_worker_count_in_a_file_is_refused_with_a_message(tmp_path, text):
    key = text.split(":")[0]
    with pytest.raises(SystemExit, match=f"{key} must be 'auto' or a whole number"):
        settings_from("--config", write_config(tmp_path, text))


@pytest.mark.parametrize(("text", "message"), [
    ("port: 99999\n", "port must be a whole number from 0 to 65535, got 99999"),
    ("port: true\n", "port must be a whole number from 0 to 65535, got True"),
    ("queue_capacity: '64'\n", "queue_capacity must be a whole number of at least 1, got '64'"),
    ("queue_capacity: 0\n", "queue_capacity must be a whole number of at least 1, got 0"),
    ("max_upload_mb: 0\n", "max_upload_mb must be a whole number of at least 1, got 0"),
    ("dilate: 300\n", "dilate must be a whole number from 0 to 256, got 300"),  # every repair would be refused
    ("feather: -1\n", "feather must be a whole number from 0 to 256, got -1"),
    ("monitor_interval: -1\n", "monitor_interval must be a number of at least 0, got -1"),
    ("outputs_keep_days: soon\n", "outputs_keep_days must be a number of at least 0, got 'soon'"),
    ("outputs_dir: 5\n", "outputs_dir must be a text, got 5"),
    ("model: 3\n", "model must be a text or null, got 3"),
    ("auth: 12\n", "auth must be a text or null, got 12"),
    ("strategy: magic\n", "unknown strategy 'magic': expected one of original, resize, crop"),
])
def test_a_value_of_the_wrong_kind_or_range_in_a_file_is_refused_with_one_line(tmp_path, text, message):
    with pytest.raises(SystemExit) as refused:
        settings_from("--config", write_config(tmp_path, text))
    assert str(refused.value) == f"error: {message}"


def test_a_number_out_of_its_range_in_a_flag_is_refused_too():
    with pytest.raises(SystemExit, match="^error: port must be a whole number from 0 to 65535, got 70000$"):
        settings_from("--port", "70000")
    assert settings_from("--preset", "hd").model_max_side is None  # the hd preset's null: no bound, allowed


def test_cpu_workers_default_to_one_per_two_cores_on_cuda_none_on_the_cpu(tmp_path):
    settings = settings_from()
    assert settings.cpu_workers == "auto"
    assert resolve_cpu_workers(settings.cpu_workers, on_cuda=True, cores=16) == 8
    assert resolve_cpu_workers(settings.cpu_workers, on_cuda=True, cores=1) == 1
    assert resolve_cpu_workers(settings.cpu_workers, on_cuda=True, cores=64) == 8  # the GPU is the limit by then
    assert resolve_cpu_workers(settings.cpu_workers, on_cuda=False, cores=16) == 0
    assert settings_from("--cpu-workers", "0").cpu_workers == 0
    assert resolve_cpu_workers(3, on_cuda=False, cores=2) == 3  # a number is taken as it is, anywhere
    assert settings_from("--config", write_config(tmp_path, "cpu_workers: 4\n")).cpu_workers == 4


def test_config_file_overrides_defaults_and_flags_override_the_file(tmp_path):
    config = write_config(tmp_path, "port: 9000\nqueue_capacity: 8\ndilate: 2\npreset: fast\n")
    settings = settings_from("--config", config)
    assert (settings.port, settings.queue_capacity, settings.dilate) == (9000, 8, 2)
    assert settings.max_side == 8192  # untouched keys keep the default
    assert settings.model_max_side == 1280  # the file chose the preset
    flagged = settings_from("--config", config, "--port", "9100", "--queue-capacity", "3", "--preset", "hd",
                            "--host", "0.0.0.0", "--dilate", "0")
    assert (flagged.port, flagged.queue_capacity, flagged.host, flagged.dilate) == (9100, 3, "0.0.0.0", 0)
    assert flagged.model_max_side is None  # the flag's preset wins over the file's


def test_the_preset_file_overrides_the_config_file(tmp_path):
    config = write_config(tmp_path, "gpu_memory_fraction: 0.9\nmodel_max_side: 999\n")
    settings = settings_from("--config", config, "--preset", "fast")
    assert (settings.gpu_memory_fraction, settings.model_max_side) == (0.4, 1280)


def test_secrets_from_the_environment_override_the_files(tmp_path, monkeypatch):
    config = write_config(tmp_path, "api_token: from-file\nauth: file:user\n")
    monkeypatch.setenv("LAMA_API_TOKEN", "from-env")
    monkeypatch.setenv("LAMA_AUTH", "ann:env-secret")
    settings = settings_from("--config", config)
    assert (settings.api_token, settings.auth) == ("from-env", "ann:env-secret")


def test_a_flag_given_explicitly_wins_over_the_environment(monkeypatch):
    # What app.load_settings does: the environment fills in secrets that were not passed as
    # flags (so they stay out of `ps`); a flag typed on the command line is taken as meant.
    monkeypatch.setenv("LAMA_API_TOKEN", "from-env")
    monkeypatch.setenv("LAMA_AUTH", "ann:env-secret")
    settings = settings_from("--api-token", "from-flag", "--auth", "bob:flag")
    assert (settings.api_token, settings.auth) == ("from-flag", "bob:flag")


def test_an_empty_environment_variable_is_ignored(monkeypatch):
    monkeypatch.setenv("LAMA_API_TOKEN", "")
    assert settings_from().api_token is None


def test_an_unknown_key_is_refused_with_its_name(tmp_path):
    config = write_config(tmp_path, "port: 7861\nqueue_capacty: 8\n")
    with pytest.raises(SystemExit) as refused:
        settings_from("--config", config)
    assert "unknown setting" in str(refused.value) and "queue_capacty" in str(refused.value)
    assert config in str(refused.value)


def test_an_unknown_preset_in_a_file_is_refused_with_the_choices(tmp_path):
    config = write_config(tmp_path, "preset: turbo\n")
    with pytest.raises(SystemExit) as refused:
        settings_from("--config", config)
    message = str(refused.value)
    assert "turbo" in message and "fast" in message and "balanced" in message and "hd" in message


def test_an_unknown_preset_flag_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit) as refused:
        parse_args(["--preset", "turbo"])
    assert refused.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


@pytest.mark.parametrize("auth", ["annsecret", "nocolon"])
def test_auth_without_a_colon_is_refused(auth, monkeypatch):
    with pytest.raises(SystemExit, match="USER:PASS"):
        settings_from("--auth", auth)
    monkeypatch.setenv("LAMA_AUTH", auth)
    with pytest.raises(SystemExit, match="USER:PASS"):
        settings_from()


def test_a_missing_or_malformed_config_file_is_a_message_not_a_traceback(tmp_path):
    with pytest.raises(SystemExit, match="cannot read config"):
        settings_from("--config", str(tmp_path / "missing.yaml"))
    with pytest.raises(SystemExit, match="not valid YAML"):
        settings_from("--config", write_config(tmp_path, "port: [7860\n"))
    with pytest.raises(SystemExit, match="must be a mapping"):
        settings_from("--config", write_config(tmp_path, "- port\n- 7860\n", "list.yaml"))


def warnings_logged(caplog, settings):
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="app"):
        warn_if_exposed(settings)
    return [r for r in caplog.records if r.name == "app" and r.levelno >= logging.WARNING]


def test_a_public_bind_without_protection_warns_loudly(caplog):
    records = warnings_logged(caplog, settings_from("--host", "0.0.0.0"))
    assert len(records) == 1
    message = records[0].getMessage()
    assert "0.0.0.0" in message and "--auth" in message and "--api-token" in message and "!!!" in message


def test_a_public_bind_names_the_protection_that_is_missing(caplog):
    records = warnings_logged(caplog, settings_from("--host", "0.0.0.0", "--auth", "ann:secret"))
    assert len(records) == 1
    assert "--api-token" in records[0].getMessage() and "--auth" not in records[0].getMessage()


@pytest.mark.parametrize("argv", [["--host", "127.0.0.1"], ["--host", "localhost"], ["--host", "::1"],
                                  ["--host", "0.0.0.0", "--auth", "ann:secret", "--api-token", "t"]])
def test_loopback_or_fully_protected_binds_do_not_warn(caplog, argv):
    assert warnings_logged(caplog, settings_from(*argv)) == []


def test_a_kernel_cache_folder_that_cannot_be_written_gives_way_to_a_temporary_one(tmp_path, caplog):
    """Triton compiles nothing without a cache it can write to (a pod's read-only volume): the
    server warns and keeps its kernels in the temporary folder instead of failing at the fast
    path's first launch. A folder it can write to is made and kept."""
    wanted = tmp_path / "models" / "kernel-cache"
    assert kernel_cache_folder(str(wanted)) == wanted and wanted.is_dir()
    assert list(wanted.iterdir()) == [], "the check's file is not left behind"
    not_a_folder = tmp_path / "model.safetensors"
    not_a_folder.write_bytes(b"")
    with caplog.at_level(logging.WARNING, logger="app"):
        folder = kernel_cache_folder(str(not_a_folder / "kernel-cache"))
    assert folder.parent == Path(tempfile.gettempdir()) and "cannot be written" in caplog.text
