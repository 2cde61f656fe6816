def transformer_lr_schedule(step, d_model, warmup_steps=4000):
    """Noam learning rate schedule from 'Attention Is All You Need'."""
    step = max(step, 1)  # Avoid division by zero
    return d_model**(-0.5) * min(step**(-0.5), step * warmup_steps**(-1.5))

# Usage with LambdaLR
scheduler = torch.optim.lr_scheduler.LambdaLR(
    optimizer,
    lr_lambda=lambda step: transformer_lr_schedule(step, d_model=512),
)

# In training loop
for batch in loader:
    # ... training code ...
    scheduler.step()
