"""The public API, pinned: each package's ``__all__`` is exactly the list below, and every name
in it resolves (after httpx's ``tests/test_exported_members.py``).

A name added to or dropped from a package's ``__all__`` fails here until this list says so:
the public surface changes on purpose only. ``parallel_kit``'s own list is the curated API of
``import parallel_kit as pk``; the folders that export nothing at package level say ``[]``.
"""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import parallel_kit

EXPORTED: dict[str, list[str]] = {
    "parallel_kit": [
        "AllWorkersLost", "ApiClient", "Comparison", "ConfigError", "Endpoint", "MODE_NAMES",
        "MissingDependency", "ModeContext", "ModeInfo", "ModelClock", "ModelNotFound",
        "OllamaClient", "OllamaError", "OllamaUnavailable", "OpenAIClient", "ParallelKitError",
        "QueueOptions", "RayOptions", "RequestFailed", "RequestResult", "RequestSpec",
        "RequestTimeout", "RetryPolicy", "RunResult", "RunSummary", "ServerBusy", "ServerOptions",
        "SimulatedOllama", "TaskQueue", "Topology", "WorkerLost", "__version__", "compare",
        "compare_sync", "get_mode", "list_profiles", "load_profile", "load_prompts", "make_client",
        "make_specs", "mode_names", "open_backend", "original_prompts", "plots", "probe",
        "read_json", "register_mode", "simulated_ollama", "theory", "write_csv", "write_json",
    ],
    "parallel_kit.api": [
        "API_KEY_ENV", "ApiBackend", "ApiSettings", "bind_warning", "create_app",
        "open_api_backend", "serve_api", "uvicorn_server",
    ],
    "parallel_kit.bench": [
        "CompareShortcuts", "Comparison", "compare", "compare_sync", "format_table",
        "run_interruptibly", "write_outputs",
    ],
    "parallel_kit.cli": [
        "COMMANDS", "build_parser", "main",
    ],
    "parallel_kit.clients": [
        "OllamaClient", "OpenAIClient", "RetryPolicy",
    ],
    "parallel_kit.measure": [],
    "parallel_kit.modes": [
        "MODE_NAMES", "ModeContext", "ModeInfo", "QueueOptions", "RayOptions", "ServerOptions",
        "get_info", "get_mode", "mode_names", "modes", "parse_modes", "register_mode",
    ],
    "parallel_kit.plots": [
        "FOOTER_GID", "assign_lanes", "footer_text", "latency_percentiles",
        "predicted_vs_measured", "save", "speedup_vs_gpus", "speedup_vs_slots", "timeline",
    ],
    "parallel_kit.production": [],
    "parallel_kit.report": [
        "MAX_REPORT_BYTES", "plan_curve", "plan_figure", "render_html_report", "svg_of",
        "write_html_report",
    ],
    "parallel_kit.servers": [],
    "parallel_kit.sim": [
        "Engine", "EngineInfo", "Faults", "ModelSpeed", "Profile", "SimEngine", "SimSettings",
        "SimulatedOllama", "engine_names", "list_profiles", "load_profile", "register_engine",
        "save_profile", "sim_settings", "simulated_ollama",
    ],
    "parallel_kit.system": [],
    "parallel_kit.theory": [
        "CurvePoint", "LoadPrediction", "PredictedSchedule", "Prediction", "ScheduledRequest",
        "ServiceModel", "Topology", "amdahl_speedup", "async_api_makespan",
        "equal_requests_makespan", "graham_bound", "greedy_makespan", "host_cache_states",
        "jittered_service", "karp_flatt_serial_fraction", "list_schedule", "lower_bound",
        "lpt_makespan", "mode_topology", "optimal_makespan", "predict", "predict_load",
        "predict_topology", "predict_turn_hits", "round_robin_makespan", "round_robin_schedule",
        "rounds", "sequential_makespan", "service_model_from_profile",
        "service_times_from_profile", "simulate_processor_sharing", "speedup_vs_slots",
        "speedup_vs_workers",
    ],
    "parallel_kit.workload": [],
}


def test_every_package_is_pinned() -> None:
    packages = {"parallel_kit"} | {m.name for m in pkgutil.walk_packages(
        parallel_kit.__path__, "parallel_kit.") if m.ispkg}
    assert packages == set(EXPORTED)


@pytest.mark.parametrize("package", sorted(EXPORTED))
def test_all_is_the_pinned_list_and_every_name_exists(package: str) -> None:
    module = importlib.import_module(package)
    exported = module.__all__
    assert len(exported) == len(set(exported)), f"{package}.__all__ repeats a name"
    assert sorted(exported) == sorted(EXPORTED[package])
    missing = [name for name in exported if getattr(module, name, None) is None]
    assert missing == []
