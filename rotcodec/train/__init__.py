"""Training: recipes, checkpoints and the step loop (`rotcodec train RECIPE.yaml`)."""
