import os, torch
os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT="29611")
import deepspeed
from transformers import BertConfig, BertForSequenceClassification
from harness.train.params import count_total, count_trainable
from harness.train.zero import gathered
deepspeed.init_distributed(dist_backend="gloo")
cfg = BertConfig(vocab_size=1000, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
torch.manual_seed(0)
ref = BertForSequenceClassification(cfg)
full_total, full_train = count_total(ref), count_trainable(ref)
for n, p in ref.named_parameters():
    p.requires_grad = n.startswith("classifier")
head_ref = {n: p.detach().clone() for n, p in ref.named_parameters() if p.requires_grad}
ds_config = {"train_micro_batch_size_per_gpu": 2, "zero_optimization": {"stage": 3}, "zero_allow_untested_optimizer": True}
opt = torch.optim.AdamW([p for p in ref.parameters() if p.requires_grad], lr=1e-3)
engine, *_ = deepspeed.initialize(model=ref, optimizer=opt, config=ds_config)
m = engine.module
zeros = sum(1 for p in m.parameters() if p.numel() == 0)
print("partitioned params with numel()==0:", zeros, "of", len(list(m.parameters())))
print("count_total", count_total(m), "expected", full_total, "| plain numel sum", sum(p.numel() for p in m.parameters()))
print("count_trainable", count_trainable(m), "expected", sum(v.numel() for v in head_ref.values()))
with gathered([p for p in m.parameters() if p.requires_grad]):
    same = all(torch.equal(p.detach().cpu(), head_ref[n]) for n, p in m.named_parameters() if p.requires_grad)
    print("gathered head equals the original:", same, [tuple(p.shape) for n, p in m.named_parameters() if p.requires_grad])
print("after the block numel:", [p.numel() for n, p in m.named_parameters() if p.requires_grad])
