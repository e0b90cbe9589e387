"""Study: reopen a logged study with its images, overlays and scores, and review it."""

import streamlit as st

from dashboard import resources
from dashboard.store import LABELS, StoreError, add_review, get_study

st.title("Study")
engine = resources.engine()

raw_id = st.query_params.get("id")
study_id = st.number_input("Study #", min_value=1, step=1, value=int(raw_id) if raw_id and raw_id.isdigit() else None)
if not study_id:
    st.info("Open a study from History, or type its number.")
    st.stop()
st.query_params["id"] = str(int(study_id))
study = get_study(engine, int(study_id))
if study is None:
    st.error(f"There is no study #{int(study_id)} in the log.")
    st.stop()

head = st.columns(4)
head[0].metric("Study score", "—" if study.probability is None else f"{study.probability:.3f}")
head[1].metric("Decision", (study.decision or "not scored").upper())
head[2].metric("Images scored", f"{study.n_scored} of {study.n_images}")
head[3].metric("Threshold", f"{study.threshold:.3f}")
st.caption(
    f"Logged {study.created_at:%Y-%m-%d %H:%M} UTC · body part {study.body_part or '—'} · "
    f"model {study.model_name} v{study.model_version} (SHA-256 {study.model_sha256[:12]}…) · "
    f"aggregate: {study.aggregate}" + (" · identifier stored as salted hash" if study.identifier_hash else "")
)
if study.note:
    st.markdown(f"> {study.note}")

for image in study.images:
    with st.container(border=True):
        st.markdown(f"**{image.file_name}**")
        if image.probability is None:
            st.warning(f"Not scored: {image.error or image.gate_reason}")
            continue
        a, b, c = st.columns([2, 2, 1])
        if image.thumbnail_png:
            a.image(image.thumbnail_png, caption="Radiograph", width="stretch")
        if image.overlay_png:
            b.image(image.overlay_png, caption="Grad-CAM", width="stretch")
        if not (image.thumbnail_png or image.overlay_png):
            a.caption("Images were not stored for this study (image storage is off).")
        c.metric("Probability abnormal", f"{image.probability:.3f}")
        if image.share is not None:
            c.metric("Share of study score", f"{image.share:.0%}")
        if image.gate_status == "warn":
            c.warning(image.gate_reason)

st.subheader("Reviews")
for review in study.reviews:
    verdict = "agrees" if review.agree else "disagrees"
    st.markdown(
        f"- {review.created_at:%Y-%m-%d %H:%M} — **{review.reviewer}** {verdict}; true label "
        f"**{review.true_label}**" + (f": {review.comment}" if review.comment else "")
    )
if not study.reviews:
    st.caption("No review yet.")

with st.form("review", clear_on_submit=True):
    st.markdown("**Add a review**")
    r1, r2, r3 = st.columns(3)
    reviewer = r1.text_input("Reviewer")
    agree = r2.radio("Do you agree with the model's decision?", ["Agree", "Disagree"], horizontal=True)
    true_label = r3.selectbox("True label", LABELS)
    comment = st.text_input("Comment")
    if st.form_submit_button("Save review", type="primary"):
        if not reviewer.strip():
            st.error("Enter the reviewer's name or initials.")
        else:
            try:
                add_review(
                    engine,
                    study.id,
                    reviewer=reviewer.strip(),
                    agree=agree == "Agree",
                    true_label=true_label,
                    comment=comment,
                )
                st.rerun()
            except StoreError as err:
                st.error(str(err))
