"""The demo's settings, the numbers it sets its own beside, and its sections' names.

Plain data, no code: :mod:`.sections` reads the settings, :mod:`.report` the docs,
references and titles.
"""

__all__ = ["PRESETS", "SETTING_DOCS", "REFERENCES", "SECTIONS", "TITLES"]

#: full: the lecture's settings; quick: a smoke test of every section in well under 3 minutes
PRESETS = {
    "full": {
        "n_train": 60000, "epochs": 10, "batch_size": 128, "n_val": 10000,
        "fake_steps": 10, "fake_lr": 0.5,
        "ascent_step": 0.05, "ascent_steps": 20, "ascent_n": 1000,
        "eval_n": 1000, "eval_eps": [0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5],
        "eval_steps": 40, "eval_restarts": 5,
        "shallow_epochs": 10, "minpert_n": 1000, "minpert_search": 10, "minpert_steps": 20,
        "minnorm_n": 100, "minnorm_attacks": ["pgd", "deepfool", "cw"], "minnorm_cw_steps": 1000,
        "minnorm_cw_binary_steps": 9,
        "targeted_n": 1000, "penalty_lam": 30.0, "penalty_steps": 100, "penalty_lr": 0.1,
        "targeted_pgd_eps": 0.3, "targeted_pgd_steps": 40,
        "defense_n_train": 60000, "defense_epochs": 10, "pgd_train_steps": None, "gradreg_lam": None,
        "aa_n": 100, "aa_eps": 0.1,
    },
    "quick": {
        "n_train": 20000, "epochs": 2, "batch_size": 128, "n_val": 2000,
        "fake_steps": 10, "fake_lr": 0.5,
        "ascent_step": 0.05, "ascent_steps": 20, "ascent_n": 200,
        "eval_n": 200, "eval_eps": [0.0, 0.1, 0.2, 0.3, 0.5],
        "eval_steps": 10, "eval_restarts": 1,
        "shallow_epochs": 2, "minpert_n": 50, "minpert_search": 7, "minpert_steps": 10,
        "minnorm_n": 10, "minnorm_attacks": ["pgd", "deepfool", "cw"], "minnorm_cw_steps": 1000,
        "minnorm_cw_binary_steps": 9,
        "targeted_n": 50, "penalty_lam": 30.0, "penalty_steps": 100, "penalty_lr": 0.1,
        "targeted_pgd_eps": 0.3, "targeted_pgd_steps": 10,
        "defense_n_train": 4000, "defense_epochs": 2, "pgd_train_steps": 2, "gradreg_lam": None,
        "aa_n": 20, "aa_eps": 0.1,
    },
}

#: what each setting means, for the report's settings table
SETTING_DOCS = {
    "n_train": "training images (first N of the training set) for the natural CNN and the shallow models",
    "epochs": "epochs of the natural CNN",
    "batch_size": "mini-batch size of every model (RMSprop, Keras defaults)",
    "n_val": "test images used as validation data during training",
    "fake_steps": "gradient steps of the fake-image descent",
    "fake_lr": "learning rate of the fake-image descent",
    "ascent_step": "untargeted ascent: the step a of x <- x + a * g / max|g|",
    "ascent_steps": "untargeted ascent: maximum steps",
    "ascent_n": "test images for the ascent's success rate",
    "eval_n": "test images for robust accuracy (sections 3, 6, 7)",
    "eval_eps": "Linf radii evaluated (0.5 is always added for the sanity check)",
    "eval_steps": "PGD steps in the evaluation (the sanity check also runs twice as many)",
    "eval_restarts": "PGD random restarts in the evaluation",
    "shallow_epochs": "epochs of softmax regression and the MLP",
    "minpert_n": "test images for the minimal-perturbation search",
    "minpert_search": "bisection halvings of [0, 1] (Linf) and [0, 28] (L2) in the minimal-perturbation search",
    "minpert_steps": "PGD steps per bisection probe (also in the minimal-norm comparison)",
    "minnorm_n": "test images (first N) on which the minimal-norm attacks are compared, per model (section 4)",
    "minnorm_attacks": "the minimal-norm attacks compared: pgd (bisection over PGD, the search above), "
                       "deepfool (50 steps, overshoot 0.02), cw (CW-L2, L2 only); add fab for FAB (100 steps)",
    "minnorm_cw_steps": "CW-L2: Adam steps per binary-search step (with abort-early)",
    "minnorm_cw_binary_steps": "CW-L2: binary-search steps over the constant c",
    "targeted_n": "test images for the targeted success rates",
    "penalty_lam": "weight of the closeness penalty (lecture: 30)",
    "penalty_steps": "gradient steps of the penalty attack",
    "penalty_lr": "learning rate of the penalty attack",
    "targeted_pgd_eps": "Linf radius of the targeted PGD comparison",
    "targeted_pgd_steps": "steps of the targeted PGD comparison",
    "defense_n_train": "training images for the three defended models (PGD-trained, TRADES, gradreg)",
    "defense_epochs": "epochs of the three defended models",
    "pgd_train_steps": "PGD steps per mini-batch in adversarial training and in TRADES's inner maximisation "
                       "(None: each defense's library default)",
    "gradreg_lam": "gradient-regularization weight (None: the library default)",
    "aa_n": "test images (first N) for the standard AutoAttack on the natural and the three defended models "
            "(sections 6, 7)",
    "aa_eps": "Linf radius of the AutoAttack evaluation",
}

#: the numbers the report sets ours beside (see DESIGN.md, "Reference results")
REFERENCES = {
    "lecture_train_acc": 0.995,
    "lecture_val_acc": 0.991,
    "lecture_fake_prob_0": 0.998,
    # Goodfellow, Shlens & Szegedy (2015), sec. 4: FGSM at eps 0.25 on MNIST (error, mean confidence)
    "goodfellow_softmax_fgsm025_error": 0.999,
    "goodfellow_softmax_fgsm025_confidence": 0.793,
    "goodfellow_maxout_fgsm025_error": 0.894,
    "goodfellow_maxout_fgsm025_confidence": 0.976,
    # Ross & Doshi-Velez (2018), MNIST, FGSM accuracy at eps 0.1 / 0.2 / 0.3
    "ross_eps": [0.1, 0.2, 0.3],
    "ross_normal_fgsm": [0.727, 0.277, 0.113],
    "ross_doubleback_fgsm": [0.922, 0.652, 0.277],
    "ross_fgsm_advtrain_fgsm": [0.996, 0.992, 0.965],
    # Madry et al. (2018): a larger CNN PGD-trained at eps 0.3, 100-step PGD with restarts
    "madry_pgd03": 0.89,
    # Croce & Hein (2020): AutoAttack's robust accuracy of the published MNIST models at eps 0.3
    # (Madry et al.'s and TRADES's networks, both larger than the lecture's)
    "croce_madry_aa03": 0.8850,
    "croce_trades_aa03": 0.9281,
    "natural_pgd03_max": 0.02,
}

SECTIONS = ("train", "fake", "untargeted", "shallow_vs_deep", "targeted",
            "adversarial_training", "gradient_regularization")

TITLES = {
    "train": "1. Training the lecture's CNN",
    "fake": "2. A fake image from noise, for every class",
    "untargeted": "3. The untargeted attack",
    "shallow_vs_deep": "4. Shallow vs deep: how large must a perturbation be?",
    "targeted": "5. The targeted attack",
    "adversarial_training": "6. Adversarial training (min-max with PGD, and TRADES)",
    "gradient_regularization": "7. Gradient regularization (double backpropagation)",
}
