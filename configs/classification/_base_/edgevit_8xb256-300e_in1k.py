# EdgeViT ImageNet-1K pretraining as the official training ran it; leaves set the arch.
# Official (saic-fi/edgevit src/main.py defaults and the README's only command,
#   `python -m torch.distributed.launch --nproc_per_node=8 --use_env main.py --model edgevit_s
#   --batch-size 256 ...`, "8-gpu server for 300 epochs"), beyond the shared recipe of
#   _base_/deit-recipe_in1k.py:
#   --batch-size 256 per GPU (README; the default is 64), 8 GPUs: total 2048.
#   --lr 5e-4, scaled linearly: lr = 5e-4 * total batch / 512 (main.py) = 2e-3 at 2048.
#   --weight-decay 0.05.
#   --clip-grad None: no clipping.
#   --warmup-lr 1e-6, --warmup-epochs 5, --min-lr 1e-5.
#   --drop-path 0.1 for every variant (passed to create_model).
#   --distillation-type none; the model has one head (BatchNorm -> mean pool -> Linear).
#   AMP: torch.cuda.amp.autocast in training (and evaluation), GradScaler (timm NativeScaler).
#   no SyncBN; evaluation every epoch.
#   The README's command is for EdgeViT-S; XXS and XS are trained with the same command (no
#   other is published, and no weights were released).
# Ours: AmpOptimWrapper with dynamic loss scaling (mmengine) for the official AMP; evaluation in
#   float32; auto_scale_lr off, with the total batch of the recipe, as the downstream configs
#   ship it (--auto-scale-lr applies the official linear rule to another total batch).
_base_ = './deit-recipe_in1k.py'

model = dict(backbone=dict(type='EdgeViT', drop_path_rate=0.1))

train_dataloader = dict(batch_size=256)
val_dataloader = dict(batch_size=384)
test_dataloader = dict(batch_size=384)

optim_wrapper = dict(
    type='AmpOptimWrapper',
    loss_scale='dynamic',
    optimizer=dict(lr=5e-4 * 2048 / 512, weight_decay=0.05))
param_scheduler = [dict(type='TimmCosineLR', warmup_t=5, warmup_lr_init=1e-6, lr_min=1e-5, by_epoch=True)]

auto_scale_lr = dict(enable=False, base_batch_size=2048)
