"""Reading the LGG data, the patient-level split, THE preprocessing and training-only augmentation."""
