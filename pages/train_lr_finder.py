"""Train page, 'Custom run' tab: the learning-rate range test under the form (explore.training.lr_finder)."""
from __future__ import annotations

import streamlit as st

from explore.training import choices
from explore.charts import lr_range_test
from explore.settings import NotAllowed, gate_request
from pages import common


def lr_finder_panel(build, clicked: bool, settings) -> None:
    """The LR finder's result under the form, with a button that copies the suggestion into the LR field."""
    from explore.training import lr_finder

    if clicked:
        try:
            (config,), _ = gate_request(settings, [build()])  # the same caps as a queued run
            with st.spinner("Range test: 100 batches with a rising learning rate, on a copy of the model…"):
                result = lr_finder.find_lr(config, common.bundle_or_stop(config.data))
            st.session_state["lr_finder"] = result | {"for": config.model}
        except (ValueError, NotAllowed) as error:
            st.error(f"Cannot run the range test: {error}")
    result = st.session_state.get("lr_finder")
    if not result:
        return
    with st.expander(f"🔎 Learning-rate range test ({result['for']})", expanded=True):
        chart_col, text_col = st.columns([3, 2])
        chart_col.altair_chart(lr_range_test(result), width="stretch")
        suggested = result["suggested_lr"]
        text_col.markdown(f"**Suggested learning rate: {suggested:.1e}** — {result['rule']}."
                          + (f"  \nSteepest descent at {result['steepest_lr']:.1e}." if result["steepest_lr"] else ""))
        text_col.caption("The loss barely moves while the rate is tiny, falls fastest in the useful range, then "
                         "blows up. The test trained a throw-away copy; your run starts fresh.")
        nearest = choices.nearest_learning_rate(suggested)
        if nearest is not None:
            text_col.button(f"Use {nearest:g}", key="use_suggested_lr", on_click=set_lr, args=(nearest,),
                            help="The nearest value on the learning-rate slider")


def set_lr(value: float) -> None:
    st.session_state["lr"] = value  # in a button callback: before the slider is drawn again
