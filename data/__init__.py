"""Reading the LGG data, the patient-level split, THE preprocessing, training-only augmentation."""
