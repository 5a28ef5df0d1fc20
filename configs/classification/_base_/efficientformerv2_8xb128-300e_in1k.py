# EfficientFormerV2 ImageNet-1K pretraining as the official training ran it; leaves set the arch.
# Official (snap-research/EfficientFormer main.py defaults, launched by dist_train.sh with
#   nothing but --model and paths; README: 8 GPUs), beyond the shared recipe of
#   _base_/deit-recipe_in1k.py:
#   --batch-size 128 per GPU, 8 GPUs (README's dist_train.sh ... 8; slurm_train.sh 2 x 4 GPUs):
#     total 1024.
#   --lr 1e-3, scaled linearly: lr = 1e-3 * total batch / 1024 (main.py) = 1e-3 at 1024.
#   --weight-decay 0.025.
#   --clip-grad 0.01 --clip-mode agc: adaptive gradient clipping, timm adaptive_clip_grad
#     (clip_factor 0.01, eps 1e-3), every step, after unscaling.
#   --warmup-lr 1e-5 (the help text says 1e-6), --warmup-epochs 5, --min-lr 1e-5.
#   --distillation-type hard, --distillation-alpha 0.5, --distillation-tau 1.0 (unused for
#     hard), --teacher-model regnety_160 (timm, global_pool avg), --teacher-path DeiT's
#     https://dl.fbaipublicfiles.com/deit/regnety_160-a5fe301d.pth; the teacher sees the same
#     mixed batch; loss = 0.5 * base + 0.5 * CE(dist head, teacher argmax) (util/losses.py).
#   the model returns (head, dist_head) logits in training, their mean in eval
#     (models/efficientformer_v2.py); BatchNorm -> mean pool -> Linear heads.
#   drop path hard-coded per variant: S0 0, S1 0, S2 0.02, L 0.1 (the backbone's defaults,
#     drop_path_rate=None); layer scale init 1e-5.
#   SyncBN on (set_defaults(sync_bn=True), convert_sync_batchnorm on the whole model).
#   fp32 training (the autocast line is `if True:`).
#   evaluation every 4 epochs (epoch % 4 == 3): val_interval=4.
# Ours: DistillingClassifier and AGCOptimWrapper (backbones.pretrain) express the distillation
#   and AGC; mmengine's sync_bn='torch' converts every BatchNorm of the classifier (the teacher,
#   held outside the model, is not converted); auto_scale_lr off, with the total batch of the
#   recipe, as the downstream configs ship it (--auto-scale-lr applies the official linear rule
#   to another total batch). The teacher checkpoint is None by default: training then runs
#   without distillation and says so (both heads learn the labels); give it with
#   --cfg-options model.teacher.checkpoint=PATH_OR_URL.
_base_ = './deit-recipe_in1k.py'

model = dict(
    type='DistillingClassifier',
    backbone=dict(type='EfficientFormerV2', resolution=224, drop_path_rate=None),
    head=dict(distillation=True),
    # the official teacher: timm regnety_160 with DeiT's weights; None trains without distillation
    teacher=dict(name='regnety_160', checkpoint=None),
    distillation=dict(type='hard', alpha=0.5, tau=1.0))

train_dataloader = dict(batch_size=128)
val_dataloader = dict(batch_size=192)
test_dataloader = dict(batch_size=192)

optim_wrapper = dict(
    type='AGCOptimWrapper',
    optimizer=dict(lr=1e-3 * 1024 / 1024, weight_decay=0.025),
    clip_grad=dict(type='agc', clip_factor=0.01, eps=1e-3))
param_scheduler = [dict(type='TimmCosineLR', warmup_t=5, warmup_lr_init=1e-5, lr_min=1e-5, by_epoch=True)]
train_cfg = dict(val_interval=4)

sync_bn = 'torch'
auto_scale_lr = dict(enable=False, base_batch_size=1024)
