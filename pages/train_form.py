"""Train page, the tabs that queue runs: a homework preset, a shared link, and `submit` for all three."""
from __future__ import annotations

from dataclasses import replace

import streamlit as st
import torch

from explore.insight import report
from explore.training.config import RunConfig
from explore.models.registry import TRANSFER_MODELS
from explore.training.presets import PRESETS, at_image_size
from explore.training.share import decode_config
from pages import common


def preset_configs(spec) -> list[RunConfig] | None:
    """The preset picker; returns the configs to queue when its Train button is pressed."""
    if st.query_params.get("preset") in PRESETS and "preset" not in st.session_state:
        st.session_state["preset"] = st.query_params["preset"]  # opened from a shared link
    name = st.selectbox("Preset", list(PRESETS), format_func=lambda n: PRESETS[n].title, key="preset")
    preset = PRESETS[name]
    st.info(preset.note.replace("\n", "  \n"))
    quick = st.checkbox("Quick variant", value=not torch.cuda.is_available(), key="quick",
                        help="On by default without a GPU: the full presets replay the homework's 256 px runs.")
    if quick:
        st.caption(f"⚡ {preset.describe_quick()}")
    configs = preset.configs(quick=quick)
    if preset.own_data:  # e.g. the real pediatric → adult mismatch: the data is the experiment
        st.caption(f"📦 This preset brings its own data: **{report.describe_data(configs[0].data)}** "
                   "(the Data page's choice is not used; its 'Real data' card fetches the files).")
    else:
        own_size = st.checkbox(f"Use the Data page's image size ({spec.image_size} px) instead of the preset's "
                               f"({configs[0].data.image_size} px)", key="preset_own_size")
        try:
            configs = [c.replace(data=replace(spec, image_size=c.data.image_size)) for c in configs]
            if own_size:
                configs = [at_image_size(c, spec.image_size) for c in configs]
        except ValueError as error:
            st.error(f"This preset cannot run on the chosen dataset: {error}")
            return None
    st.dataframe(report.configs_table(configs), hide_index=True)
    st.caption(f"🔗 Link to this preset: `?preset={name}` (add it to this page's address and share it)")
    label = "Train this preset" + (f" ({len(configs)} runs, one after another)" if len(configs) > 1 else "")
    return configs if st.button(label, type="primary", key="train_preset") else None


def shared_config() -> RunConfig | None:
    """A configuration opened from a shared link (?config=...); returns it when Train is pressed."""
    try:
        config = decode_config(st.query_params["config"])
    except ValueError as error:
        st.error(f"{error}. Ask for a new link, or set the run up by hand in the other tabs.")
        return None
    st.info("This configuration came with the link you opened. Train it as it is, or change it in the "
            "Custom run tab.")
    st.dataframe(report.configs_table([config]), hide_index=True)
    return config if st.button("Train this configuration", type="primary", key="train_shared") else None


def honest_weights(configs: list[RunConfig]) -> list[RunConfig]:
    """Transfer runs without their ImageNet weights are renamed '(random init)' before they are queued."""
    if not any(c.model in TRANSFER_MODELS for c in configs):
        return configs
    from explore.training.transfer import honest_configs

    configs, messages = honest_configs(configs)
    for message in messages:
        st.warning(message)
    return configs


def submit(store, build) -> None:
    """Queue the runs the form built; their ids go into the URL so a refresh finds them.
    The job manager's gate may cap runs (demo mode) or refuse them; the page says what it said."""
    try:
        configs = build()
    except ValueError as error:
        st.error(f"Cannot start: {error}")
        return
    if not configs:
        return
    run_ids = common.queue_runs(store, honest_weights(configs if isinstance(configs, list) else [configs]))
    if run_ids is None:
        return
    st.query_params["run"] = run_ids
    st.session_state["train_runs"] = run_ids
