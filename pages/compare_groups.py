"""Compare page, the tabs that queue groups of runs: sweep one or two settings, repeat with seeds."""
from __future__ import annotations

import time

import streamlit as st

from explore import charts
from explore.insight import compare
from pages import common
from pages.compare_files import chart_downloads


def base_picker(store, base_options: list[str], label_of: dict, key: str):
    """The config a sweep or repeat starts from, or None (with a note) when no selected run has one."""
    if not base_options:
        st.info("Select a run whose settings can be read to start from them.")
        return None
    run_id = st.selectbox("Start from the settings of", base_options, key=key,
                          format_func=lambda r: label_of.get(r, r))
    return store.load(run_id, with_metrics=False).config


def queue(store, configs, state_key: str) -> None:
    run_ids = common.queue_runs(store, configs)
    if run_ids is None:
        return
    st.session_state[state_key] = configs[0].group
    st.success(f"Queued {len(run_ids)} runs as group {configs[0].group!r}; they fill in below as they finish.")


def sweep_grid(base) -> tuple[dict, list[str]]:
    """A text box of values per swept setting → ({setting: values}, problems to show)."""
    settings = [] if base is None else st.multiselect(
        "Settings to sweep (one or two)", list(compare.SWEEP_SETTINGS), max_selections=2, default=["lr"],
        format_func=lambda s: compare.SWEEP_SETTINGS[s][0])
    grid, problems = {}, []
    for setting in settings:
        title, kind = compare.SWEEP_SETTINGS[setting]
        text = st.text_input(f"Values of the {title} (now {compare.setting_value(base, setting)})",
                             key=f"sweep_values_{setting}",
                             placeholder="on, off" if kind is bool else "e.g. 1e-4, 1e-3, 1e-2")
        try:
            grid[setting] = compare.parse_values(setting, text)
        except ValueError as error:
            if text.strip():  # an empty box is not yet a mistake
                problems.append(str(error))
    return (grid if len(grid) == len(settings) else {}), problems


def sweep_tab(store, records, base_options, label_of) -> None:
    base = base_picker(store, base_options, label_of, "sweep_base")
    grid, problems = sweep_grid(base)
    configs = []
    if base is not None:
        epochs = st.number_input("Epochs per run", 1, 200, min(base.epochs, 200))
    if grid:
        try:
            configs = compare.sweep_configs(base, grid, f"sweep-{time.strftime('%Y%m%d-%H%M%S')}", epochs)
        except ValueError as error:
            problems.append(str(error))
    for problem in problems:
        st.caption(f"⚠️ {problem}")
    if base is not None and st.button(f"Queue {len(configs)} runs", disabled=not configs, type="primary"):
        queue(store, configs, "compare_sweep_group")
    groups = compare.watchable_groups(compare.sweep_groups(records), st.session_state.get("compare_sweep_group"))
    if groups:
        st.fragment(run_every=3)(sweep_progress)(store, st.selectbox("Show the sweep", groups, key="sweep_watched"))


def sweep_progress(store, watched: str) -> None:
    members = compare.group_records(store, watched)
    swept = (compare.swept_settings(r.config for r in members) or ["lr"])[:2]
    results = compare.sweep_results(members, swept)
    done = compare.finished_count(results)
    st.progress(done / max(len(results), 1), text=f"{done} of {len(results)} runs finished")
    if done:
        metric = st.radio("Metric", compare.RESULT_METRICS, index=2, horizontal=True, key="sweep_metric")
        chart = charts.sweep(results, swept, metric)
        st.altair_chart(chart, width="stretch")
        with st.popover("Save the sweep chart"):
            chart_downloads(chart, f"{watched}-{metric}", "sweep-chart")
    st.dataframe(results.drop(columns=["run_id"]), hide_index=True, width="stretch")


def repeat_tab(store, records, base_options, label_of) -> None:
    st.caption("One run of a small dataset swings by several points with the seed (weight initialisation and "
               "batch order). Repeating it shows the spread; the images stay the same.")
    base = base_picker(store, base_options, label_of, "repeat_base")
    seeds = st.number_input("How many seeds", 2, 10, 3)
    if base is not None and st.button(f"Queue {seeds} runs (seeds 0–{seeds - 1})", type="primary"):
        queue(store, compare.repeat_configs(base, range(seeds), f"repeat-{time.strftime('%Y%m%d-%H%M%S')}"),
              "compare_repeat_group")
    groups = compare.watchable_groups(compare.repeat_groups(records), st.session_state.get("compare_repeat_group"))
    if groups:
        st.fragment(run_every=3)(repeat_progress)(store, st.selectbox("Show the repeats", groups, key="repeat_watched"))


def repeat_progress(store, watched: str) -> None:
    members = compare.group_records(store, watched)
    results = compare.comparison_table(members)
    done = compare.finished_count(results)
    st.progress(done / max(len(results), 1), text=f"{done} of {len(results)} seeds finished")
    summary = compare.aggregate_repeats(results)
    st.dataframe(summary, hide_index=True, column_config={
        c: st.column_config.NumberColumn(c, format="percent") for c in ("mean", "std", "min", "max")})
    if done:
        st.markdown(compare.describe_repeats(summary))
        left, right = st.columns(2)
        left.altair_chart(charts.repeats(results[results.status == "finished"]), width="stretch")
        band = compare.repeat_curves(compare.curves([m for m in members if m.state == "finished"]))
        right.altair_chart(charts.repeat_band(band, "accuracy"), width="stretch")
