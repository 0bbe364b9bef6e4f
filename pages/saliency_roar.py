"""The Saliency page's remove-and-retrain section (Hooker et al. 2019): queue the group, show what it found."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from explore import charts
from explore.insight import roar
from explore.training.store import RunStore
from pages import common


def roar_section(store: RunStore, run_id: str, loaded) -> None:
    """Remove and retrain: a button that queues the group of runs, and their test accuracy once trained."""
    st.subheader("Remove and retrain (ROAR)")
    st.caption(f"Hooker et al. 2019: remove the top 10, 30 and 50% of pixels of every image by each method's maps, "
               f"train a fresh model on what is left, and compare its test accuracy with removing random pixels. "
               f"Removed pixels become {roar.FILL}. A map that found the informative pixels hurts more than random.")
    if loaded.config.roar_from_run or loaded.config.permute_labels:
        st.caption("This run is itself a ROAR or shuffled-label run: remove and retrain starts from a normal run.")
        return
    run_dir = store.path(run_id)
    results = roar.roar_results(store, run_dir)
    if results is not None and results["methods"]:
        show_roar(results)
    elif results is not None:
        st.info(f"{results['pending']} ROAR run(s) queued or running; the Train page shows their progress.")
    methods = [m for m in roar.ROAR_DEFAULT_METHODS if not (m == "gradcam" and loaded.gradcam_layer_name is None)]
    configs = roar.missing_configs(store, run_dir, roar.roar_configs(loaded.config, run_dir, methods))
    if not configs:
        return
    if loaded.bundle.image_size > 64:
        st.caption(f"These runs train at {loaded.bundle.image_size} px, {loaded.config.epochs} epochs each; ROAR is "
                   f"meant small: a run on the simulation at 64 px keeps the group to minutes.")
    label = f"Remove and retrain (queues {len(configs)} runs)"
    if st.button(label, key="roar_queue"):
        run_ids = common.queue_runs(store, configs)
        if run_ids:
            st.success(f"Queued {len(run_ids)} runs (group “{configs[0].group}”); come back when they have finished.")


def show_roar(results: dict) -> None:
    frame = pd.DataFrame(roar.roar_rows(results))
    with st.container(key="roar_table"):
        st.dataframe(frame, hide_index=True)
    st.markdown(f"- {roar.roar_sentence(results)}")
    st.altair_chart(charts.roar(roar.roar_points(results), roar.RANDOM))
