"""Analyze: upload a study, see per-image scores with Grad-CAM and the study aggregate."""

import streamlit as st

from core.aggregate import AGGREGATES
from core.errors import BoneSentinelError
from dashboard import resources
from dashboard.figures import score_gauge_figure, shares_figure
from dashboard.service import BODY_PARTS, StudyForm, analyze_study, overlay_png

AGGREGATE_LABELS = {"mean": "Mean of image probabilities (MURA protocol)", "max": "Highest image probability"}

st.title("Analyze a study")
st.caption(
    "Upload every radiograph of one study. Each image is scored, explained with Grad-CAM, and the "
    "study is logged. Files that cannot be read are listed with the reason; the rest are still scored."
)

try:
    model = resources.predictor()
except BoneSentinelError as err:
    st.error(f"The model could not be loaded: {err}")
    st.stop()
settings = resources.settings()

folder_mode = st.toggle("Upload a whole folder", help="Pick a folder instead of individual files.")
with st.form("study_form", clear_on_submit=False):
    left, right = st.columns(2)
    identifier = left.text_input(
        "Patient or accession ID (optional)", help="Stored only as a salted hash, never in clear."
    )
    body_part = right.selectbox("Body part", BODY_PARTS, index=0)
    note = st.text_input("Note (optional)", max_chars=500, placeholder="e.g. clinical question — no patient names")
    files = st.file_uploader(
        "Radiographs: PNG, JPEG or DICOM",
        accept_multiple_files="directory" if folder_mode else True,
        help=f"Up to {settings.max_files_per_study} files, {settings.max_file_mb} MB each.",
    )
    aggregate = st.radio("Study score", AGGREGATES, format_func=AGGREGATE_LABELS.get, horizontal=True)
    submitted = st.form_submit_button("Analyze study", type="primary", icon=":material/play_arrow:")

if submitted:
    if not files:
        st.warning("Choose at least one image first.")
    elif len(files) > settings.max_files_per_study:
        st.error(f"{len(files)} files selected; a study may hold at most {settings.max_files_per_study}.")
    else:
        bar = st.progress(0.0, text="Scoring…")
        try:
            st.session_state["outcome"] = analyze_study(
                model,
                [(f.name, f.getvalue()) for f in files],
                StudyForm(identifier=identifier or None, body_part=body_part, note=note, aggregate=aggregate),
                engine=resources.engine(),
                salt=resources.salt(),
                store_images=settings.store_images,
                progress=lambda done, total: bar.progress(done / total, text=f"Scored {done} of {total} files"),
            )
        except BoneSentinelError as err:  # e.g. a study over the size limits
            st.session_state.pop("outcome", None)
            st.error(str(err))
        bar.empty()

outcome = st.session_state.get("outcome")
if outcome is None:
    st.info("Results appear here after you analyze a study.")
    st.stop()

st.divider()
result = outcome.result
if result is None:
    st.error("No image of this study could be scored.")
else:
    summary, gauge = st.columns([1, 2])
    with summary:
        st.metric(f"Study score ({result.method} of {len(outcome.scored)} images)", f"{result.probability:.3f}")
        verdict = st.error if result.decision == "abnormal" else st.success
        verdict(f"**{result.decision.upper()}** at the model's threshold {result.threshold:.3f}")
        st.caption("Decision support only — a clinician makes the diagnosis.")
    gauge.plotly_chart(score_gauge_figure(result.probability, result.threshold), width="stretch")

if outcome.study_id is not None:
    st.success(f"Logged as study #{outcome.study_id}.", icon=":material/task_alt:")
    st.page_link("views/study.py", label="Open this study to review it", query_params={"id": outcome.study_id})
elif outcome.log_error:
    st.error(f"The study was scored but NOT logged: {outcome.log_error}")

for score in outcome.rejected:
    st.warning(f"**{score.name}** was not scored: {score.error}", icon=":material/block:")
for score in outcome.scored:
    if score.gate is not None and score.gate.status == "warn":
        st.info(f"**{score.name}**: {score.gate.reason}.", icon=":material/warning:")

if outcome.scored:
    names = [s.name for s in outcome.scored]
    st.plotly_chart(
        shares_figure(names, [sh for sh in outcome.shares if sh is not None], [s.probability for s in outcome.scored]),
        width="stretch",
    )
    alpha = st.slider("Grad-CAM opacity", 0.0, 1.0, 0.45, 0.05, help="0 shows the radiograph alone.")
    for score, share in zip(outcome.scores, outcome.shares, strict=True):
        if not score.scored:
            continue
        with st.container(border=True):
            st.markdown(f"#### {score.name}")
            original, explained, numbers = st.columns([2, 2, 1])
            original.image(overlay_png(score, model.input_size_, alpha=0.0), caption="Radiograph", width="stretch")
            try:
                explained.image(overlay_png(score, model.input_size_, alpha=alpha), caption="Grad-CAM", width="stretch")
            except Exception as err:  # one bad explanation must not blank the page
                explained.warning(f"Grad-CAM unavailable for this image ({type(err).__name__}).")
            numbers.metric("Probability abnormal", f"{score.probability:.3f}")
            if score.gate is not None and score.gate.status == "warn":
                numbers.warning("Outside the training data: interpret with caution.")
            numbers.metric("Share of study score", f"{share:.0%}")
            meta = score.image.meta
            numbers.caption(f"{meta.source_format}, {meta.width}×{meta.height}, {meta.bits}-bit")
