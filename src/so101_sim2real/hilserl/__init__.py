"""HIL-SERL fine-tuning: the shared replay buffer (more to come: learner, actor, interveners)."""
