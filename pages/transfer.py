"""Transfer learning (HW3): a pretrained backbone (ImageNet, or chest X-rays via torchxrayvision) as a
frozen feature extractor vs fine-tuned.

Runs go to the server's job queue; this page only queues them and reads the run store.
"""
import time

import streamlit as st

from explore import charts
from explore.insight import compare, report
from explore.training import transfer
from explore.data import IMAGE_SIZES
from explore.models.registry import TRANSFER_MODELS
from pages.common import current_data_spec, queue_runs, run_store, status_badge

LEARNING_RATES = [1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2]
LR_SCALES = [0.01, 0.03, 0.1, 0.3, 1.0]
store, spec = run_store(), current_data_spec()
suggested = transfer.suggested_settings()

st.title("🔁 Transfer learning")
st.caption(f"Dataset: **{report.describe_data(spec)}** (the image size below replaces its size). "
           "**Frozen**: the pretrained backbone stays fixed and only a new head trains — its features are computed "
           "once and cached, so epochs take milliseconds. **Fine-tuned**: every weight trains, the backbone at a "
           "smaller learning rate.")

with st.container(border=True):
    c1, c2, c3 = st.columns(3)
    backbone = c1.selectbox("Backbone", TRANSFER_MODELS, index=TRANSFER_MODELS.index(suggested["backbone"]),
                            format_func=lambda n: transfer.BACKBONES[n].title, key="tl_backbone")
    mode = c2.selectbox("Mode", transfer.MODES, format_func=transfer.MODE_TITLES.get, key="tl_mode")
    head = c3.radio("New head", ["course", "linear"], horizontal=True, key="tl_head",
                    format_func={"course": "course: 256 → ReLU → Dropout 0.5 → out", "linear": "one Linear"}.get)
    c4, c5, c6, c7 = st.columns(4)
    lr = c4.select_slider("Head learning rate (Adam)", LEARNING_RATES, value=1e-3, format_func="{:g}".format)
    lr_scale = c5.select_slider("Backbone lr = head lr ×", LR_SCALES, value=0.1, format_func="{:g}".format)
    epochs = c6.slider("Epochs", 1, 30, 5)
    size = c7.selectbox("Image size (px)", IMAGE_SIZES, index=IMAGE_SIZES.index(224))
    frozen_epochs = st.slider("Two-phase: epochs frozen before unfreezing", 1, 10, 2) if mode == "two-phase" else 2
    quick = st.toggle("Quick: at most 128 px and 3 epochs")
    st.caption("224 px is what the ImageNet networks were trained on. The chest X-ray backbones "
               "(torchxrayvision) resize every image to their own resolution (DenseNet 224 px, ResNet-50 512 px) "
               "and take it as one channel scaled to [-1024, 1024]. " + suggested["note"])

status = transfer.weights_status(backbone, check_network=True)
use_random = False
if status["available"] or status["downloadable"]:
    st.success(status["message"])
else:
    st.warning(status["message"])
    use_random = st.checkbox("Train from random initialisation instead — labelled **(random init)**: "
                             "that is training from scratch, not transfer learning", key="tl_random")
can_queue = status["available"] or status["downloadable"] or use_random

st.subheader("Parameters: total vs trainable")
st.dataframe(transfer.parameter_table(backbone, head), hide_index=True, width="stretch")
st.caption("Two-phase trains the head only for its first epochs, then everything; partial trains the last block "
           "and the head.")


def queue(modes) -> None:
    """Queue one run per mode with the same settings, as one group."""
    group = f"transfer · {transfer.BACKBONES[backbone].title} · {time.strftime('%Y-%m-%d %H:%M:%S')}"
    configs = [transfer.transfer_config(backbone, m, data=spec, head=head, lr=lr, backbone_lr_scale=lr_scale,
                                        epochs=epochs, image_size=size, frozen_epochs=frozen_epochs,
                                        pretrained=not use_random, quick=quick, group=group) for m in modes]
    if queue_runs(store, configs) is not None:
        st.session_state["tl_group"] = group


b1, b2 = st.columns(2)
if b1.button(f"Run {mode}", disabled=not can_queue, width="stretch"):
    queue([mode])
if b2.button("Run both: frozen and fine-tuned", type="primary", disabled=not can_queue, width="stretch"):
    queue(["frozen", "finetune"])

groups = transfer.transfer_groups(store)
if not groups:
    st.info("No transfer runs yet: press **Run both** to train the frozen and the fine-tuned model side by side.")
    st.stop()
if st.session_state.get("tl_group") not in groups:
    st.session_state["tl_group"] = groups[0]
group = st.selectbox("Group of runs", groups, key="tl_group")
active = any(r.state in ("queued", "running") for r in transfer.group_records(store, group))


@st.fragment(run_every=1.0 if active else None)
def group_view(group: str, was_active: bool) -> None:
    records = transfer.group_records(run_store(), group)
    for r in records:
        st.write(f"{status_badge(r.state)} **{r.label}** · weights: {(r.summary or r.status).get('weights') or '…'}"
                 f" · {r.status.get('message', '')}")
    st.subheader("Cost: one-time feature pass vs seconds per epoch")
    st.dataframe(transfer.timing_table(records), hide_index=True, width="stretch",
                 column_config={c: st.column_config.NumberColumn(format="percent") for c in ("val_acc", "test_acc")})
    st.caption("A frozen run first computes the backbone's features for every image once (status 'preparing data'); "
               "each epoch then trains only the head. Augmentation cannot apply to those cached features.")
    curves = compare.curves(records)
    if not curves.empty:
        for column, metric in zip(st.columns(2), ("accuracy", "loss")):
            column.altair_chart(charts.curves(curves, metric, by_run=True), width="stretch")
    st.subheader("The course's comparison, with these runs' numbers")
    st.dataframe(transfer.comparison_table(records), width="stretch")
    st.caption("Val is site A (same hospital as training), test is site B: a val − test gap is the site shift, "
               "not overfitting.")
    if was_active and not any(r.state in ("queued", "running") for r in records):
        st.rerun()  # all finished: redraw the page once and stop polling


group_view(group, active)
