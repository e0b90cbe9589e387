"""Model: what the bundle's card says — validation metrics, ROC, calibration, data, intended use."""

import pandas as pd
import streamlit as st

from core.errors import BoneSentinelError
from dashboard import resources
from dashboard.figures import confusion_figure, explore_threshold, reliability_figure, roc_figure


def fmt(value, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


try:
    card = resources.card()
except BoneSentinelError as err:
    st.error(str(err))
    st.stop()

st.title(f"Model: {card['name']} v{card['version']}")
st.caption(
    f"{card['architecture']}, input {card['input_size']}×{card['input_size']}, created {card['created_at']} · "
    f"weights SHA-256 {card['sha256'][:16]}…"
)
st.warning(f"**Intended use.** {card['intended_use']}")

validation = card.get("validation")
if not validation:
    st.error("This bundle has not been evaluated: its card holds no validation metrics.")
    st.stop()

level_name = st.radio(
    "Level", ["image_level", "study_level"], horizontal=True, format_func=lambda k: k.replace("_", " ").capitalize()
)
level = validation[level_name]
at = level["at_threshold"]
st.caption(
    f"Measured on **{validation['dataset']} / {validation['split']}**: {level['n']} "
    f"{'images' if level_name == 'image_level' else 'studies'}, {level['n_abnormal']} abnormal · "
    f"evaluated {validation['evaluated_at']}"
)
cols = st.columns(6)
cols[0].metric("AUROC", fmt(level["auroc"]), help="Area under the ROC curve")
cols[1].metric(
    "AUROC 95 % CI", f"{level['auroc_ci'][0]:.2f}–{level['auroc_ci'][1]:.2f}", help="Bootstrap percentile interval"
)
cols[2].metric("Sensitivity", fmt(at["sensitivity"]))
cols[3].metric("Specificity", fmt(at["specificity"]))
cols[4].metric("Cohen's κ", fmt(at["kappa"]))
cols[5].metric("ECE", fmt(level["calibration"]["ece"]), help="Expected calibration error (10 bins)")
st.caption(f"Operating threshold **{card['threshold']:.3f}** — {card['threshold_method']}.")

roc_col, side_col = st.columns([3, 2])
with roc_col:
    explore_at = st.slider(
        "Explore another threshold (does not change the model's logged decisions)",
        0.0,
        1.0,
        float(card["threshold"]),
        0.01,
    )
    explored = explore_threshold(level["roc"], explore_at)
    moved = abs(explored["threshold"] - card["threshold"]) > 0.005  # one marker when they coincide
    st.plotly_chart(
        roc_figure(level["roc"], level["auroc"], level["auroc_ci"], at, explored if moved else None), width="stretch"
    )
    st.caption(
        f"At threshold {explored['threshold']:.3f}: sensitivity {explored['sensitivity']:.3f}, "
        f"specificity {explored['specificity']:.3f} (read from the stored ROC points)."
    )
with side_col:
    st.plotly_chart(confusion_figure(at), width="stretch")
    calibration = card.get("calibration") or {}
    if calibration.get("bins_before") and level_name == "image_level":
        st.plotly_chart(
            reliability_figure(
                level["calibration"]["bins"],
                level["calibration"]["ece"],
                calibration["bins_before"],
                calibration["ece_before"],
            ),
            width="stretch",
        )
        st.caption(
            f"{calibration['method']} (fitted on {calibration['fitted_on']}): "
            f"ECE {calibration['ece_before']:.3f} → {calibration['ece_after']:.3f}."
        )
    else:
        st.plotly_chart(reliability_figure(level["calibration"]["bins"], level["calibration"]["ece"]), width="stretch")

if validation.get("per_body_part"):
    st.subheader("Per body part")
    parts = pd.DataFrame(validation["per_body_part"]).rename(
        columns={
            "body_part": "Body part",
            "n": "Images",
            "n_abnormal": "Abnormal",
            "auroc": "AUROC",
            "kappa": "Cohen's κ",
        }
    )
    st.dataframe(parts, hide_index=True, width="stretch")

gate = card.get("gate")
if gate:
    st.subheader("Input gate")
    measured = gate.get("measured") or {}
    if measured:
        ok_col, reject_col, other_col = st.columns(3)
        ok_col.metric("Validation radiographs passed", f"{measured['val_ok_rate']:.1%}", help="Share scored as ok")
        reject_col.metric(
            "Non-radiographs rejected",
            f"{measured['non_radiograph_reject_rate']:.1%}",
            help=measured.get("non_radiograph_reject_rate_method"),
        )
        other_col.metric(
            "Other-anatomy radiographs flagged",
            f"{measured['other_anatomy_warned_or_rejected']} of {measured['other_anatomy_n']}",
        )
    st.markdown(gate.get("summary", ""))

data = card["training_data"]
st.subheader("Training data")
st.markdown(
    f"**{data['name']}** — {data.get('credit', '')}. Licence: {data.get('licence', 'unknown')}.  \n"
    f"{data.get('label_definition', '')}"
)
if data.get("counts"):
    counts = pd.DataFrame([data["counts"]])
    st.dataframe(counts.rename(columns=lambda key: key.replace("_", " ").capitalize()), hide_index=True)
st.subheader("Limitations")
st.markdown("\n".join(f"- {item}" for item in card["limitations"]))
training = card.get("training") or {}
if training.get("command"):
    st.subheader("Reproduce")
    earlier = ((training.get("initialised_from") or {}).get("training") or {}).get("command")
    steps = [earlier, training["command"], validation.get("command")]
    st.code("\n".join(step for step in steps if step), language="bash")
    st.caption("Then `python -m training.gate` fits the input gate; `make model` runs every step.")
