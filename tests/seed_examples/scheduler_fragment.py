from torchlingo.config import Config
from torchlingo.training import train_model

config = Config(
    learning_rate=1e-4,
    scheduler_type="plateau",   # "cosine" | "plateau" | "transformer" | "noam" | "none"
    scheduler_patience=3,       # plateau only: validations before LR is halved
    warmup_steps=8000,          # cosine/transformer/noam: steps for linear warmup
)

result = train_model(model, train_loader, val_loader, config=config)
