from torchlingo.config import Config
from torchlingo.training import train_model

config = Config(
    use_tensorboard=True,
    experiment_name="my_experiment",
    tensorboard_dir="./runs",
    log_interval=100,  # Log every 100 steps
)

result = train_model(
    model=model,
    train_loader=train_loader,
    val_loader=val_loader,
    config=config,
)
