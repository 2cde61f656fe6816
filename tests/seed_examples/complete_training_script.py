import torch
from torch.utils.data import DataLoader
from torch.utils.tensorboard import SummaryWriter
from torchlingo.data_processing import NMTDataset, collate_fn
from torchlingo.models import SimpleTransformer
from torchlingo.config import Config

def train_epoch(model, loader, criterion, optimizer, device, grad_clip=1.0):
    model.train()
    total_loss = 0
    for src, tgt in loader:
        src, tgt = src.to(device), tgt.to(device)
        tgt_input, tgt_output = tgt[:, :-1], tgt[:, 1:]
        
        optimizer.zero_grad()
        logits = model(src, tgt_input)
        loss = criterion(logits.reshape(-1, logits.size(-1)),
                        tgt_output.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        
        total_loss += loss.item()
    return total_loss / len(loader)

def validate(model, loader, criterion, device):
    model.eval()
    total_loss = 0
    with torch.no_grad():
        for src, tgt in loader:
            src, tgt = src.to(device), tgt.to(device)
            tgt_input, tgt_output = tgt[:, :-1], tgt[:, 1:]
            logits = model(src, tgt_input)
            loss = criterion(logits.reshape(-1, logits.size(-1)),
                           tgt_output.reshape(-1))
            total_loss += loss.item()
    return total_loss / len(loader)

def main():
    # Config
    config = Config(
        batch_size=32,
        learning_rate=1e-4,
        d_model=256,
        n_heads=8,
        num_encoder_layers=4,
        num_decoder_layers=4,
    )
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    
    # Data
    train_data = NMTDataset("data/train.tsv", config=config)
    val_data = NMTDataset("data/val.tsv", 
                          src_vocab=train_data.src_vocab,
                          tgt_vocab=train_data.tgt_vocab,
                          config=config)
    
    train_loader = DataLoader(train_data, config.batch_size, shuffle=True, 
                              collate_fn=collate_fn)
    val_loader = DataLoader(val_data, config.batch_size, collate_fn=collate_fn)
    
    # Model
    model = SimpleTransformer(
        len(train_data.src_vocab),
        len(train_data.tgt_vocab),
        config=config,
    ).to(device)
    
    criterion = torch.nn.CrossEntropyLoss(ignore_index=config.pad_idx)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode='min', factor=0.5, patience=2
    )
    
    # Training
    writer = SummaryWriter()
    best_val_loss = float('inf')
    
    for epoch in range(50):
        train_loss = train_epoch(model, train_loader, criterion, 
                                 optimizer, device)
        val_loss = validate(model, val_loader, criterion, device)
        scheduler.step(val_loss)
        
        writer.add_scalars("Loss", {"train": train_loss, "val": val_loss}, epoch)
        print(f"Epoch {epoch+1}: Train={train_loss:.4f}, Val={val_loss:.4f}")
        
        if val_loss < best_val_loss:
            best_val_loss = val_loss
            torch.save(model.state_dict(), "best_model.pt")

if __name__ == "__main__":
    main()
