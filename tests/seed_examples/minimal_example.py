import torch
from torch.utils.data import DataLoader
from torchlingo.data_processing import NMTDataset, collate_fn
from torchlingo.models import SimpleTransformer
from torchlingo.config import Config

# Setup
config = Config(batch_size=32, learning_rate=1e-4)
dataset = NMTDataset("data/train.tsv")
loader = DataLoader(dataset, batch_size=config.batch_size, 
                    shuffle=True, collate_fn=collate_fn)

model = SimpleTransformer(
    src_vocab_size=len(dataset.src_vocab),
    tgt_vocab_size=len(dataset.tgt_vocab),
    config=config,
)

# Loss and optimizer
criterion = torch.nn.CrossEntropyLoss(ignore_index=config.pad_idx)
optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)

# Training loop
model.train()
for epoch in range(10):
    total_loss = 0
    for src, tgt in loader:
        # Teacher forcing setup
        tgt_input = tgt[:, :-1]
        tgt_output = tgt[:, 1:]
        
        # Forward
        logits = model(src, tgt_input)
        loss = criterion(logits.reshape(-1, logits.size(-1)), 
                        tgt_output.reshape(-1))
        
        # Backward
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        
        total_loss += loss.item()
    
    print(f"Epoch {epoch+1}: Loss = {total_loss/len(loader):.4f}")
