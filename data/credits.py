"""Credits and licences of the datasets a bundle can be trained on (go into model cards)."""

CREDITS = {
    "knee-kl": {
        "name": "Knee Osteoarthritis Severity Grading Dataset",
        "credit": "Chen P., Mendeley Data, 2018, doi:10.17632/56rmx5bjcr.1; "
        "radiographs from the Osteoarthritis Initiative (OAI)",
        "licence": "CC BY 4.0",
        "label_definition": "abnormal = Kellgren–Lawrence grade ≥ 2 (radiographic osteoarthritis)",
        "intended_use": "Knee radiographs in posteroanterior view; flags radiographic osteoarthritis "
        "(Kellgren–Lawrence grade ≥ 2) as abnormal.",
        "limitations": [
            "One body part (knee) and one view (posteroanterior); other anatomy or views are outside what it knows.",
            "Images come from one cohort (the Osteoarthritis Initiative), pre-cropped to the joint at 224×224; "
            "whole-leg or differently framed radiographs behave differently.",
            "Detects osteoarthritis only: fractures, tumours, implants and other abnormalities are not what it was trained on.",
            "KL grade 1 ('doubtful') vs 2 is a hard, observer-dependent boundary; errors concentrate there.",
        ],
    },
    "mura": {
        "name": "MURA v1.1 (musculoskeletal radiographs)",
        "credit": "Rajpurkar P. et al., Stanford ML Group, 2017, arXiv:1712.06957",
        "licence": "Stanford University School of Medicine MURA Dataset Research Use Agreement",
        "label_definition": "abnormal = study labelled positive by radiologists",
    },
    "chestxray14": {
        "name": "NIH ChestX-ray14",
        "credit": "Wang X. et al., NIH Clinical Center, CVPR 2017",
        "licence": "public, no restrictions on use (NIH Clinical Center); cite the CVPR 2017 paper",
        "label_definition": "abnormal = any finding other than 'No Finding'",
    },
}


def credit_for(dataset: str, preset: str | None = None) -> dict:
    key = preset if dataset == "folders" and preset in CREDITS else dataset
    return dict(CREDITS.get(key, {"name": dataset, "credit": "unknown", "licence": "unknown"}))
