"""Mismatch page, section 5: retrain with a fix (per-image standardisation, augmentation, ...) and compare the gaps."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from explore.insight import mismatch as mm
from pages import common


def try_a_fix(store, run_id: str, config) -> None:
    st.header("5 · Try a fix")
    chosen = [fix.key for fix in mm.available_fixes(config)
              if st.checkbox(f"**{fix.title}**: {fix.why}", key=f"mismatch_fix_{fix.key}",
                             value=fix.key in mm.SUGGESTED_FIXES)]
    epochs = st.number_input("Epochs per run", 1, 200, int(config.epochs), key="mismatch_epochs")
    if st.button(f"Queue {len(chosen)} run(s) as one group", disabled=not chosen, type="primary"):
        try:
            configs = mm.fix_configs(config, run_id, chosen, int(epochs))
        except ValueError as error:
            st.error(f"Could not queue the runs: {error}")
        else:
            if (ids := common.queue_runs(store, configs)) is not None:
                st.success(f"Queued {len(ids)} run(s); they train in the background (the table below updates).")
    active = mm.fixes_active(mm.fix_table(store, run_id))
    st.fragment(run_every=3.0 if active else None)(fix_results)(store, run_id)


def fix_results(store, run_id: str) -> None:
    frame = pd.DataFrame(mm.fix_table(store, run_id))
    percent = st.column_config.NumberColumn
    st.dataframe(frame[["variant", "status", "val_acc", "test_acc", "gap", "epochs", "changes"]], hide_index=True,
                 column_config={"val_acc": percent("val acc (site A)", format="percent"),
                                "test_acc": percent("test acc (site B)", format="percent"),
                                "gap": percent("gap (val − test)", format="percent")})
    if len(frame) == 1:
        st.caption("No fixes queued for this run yet.")
