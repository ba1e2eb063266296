#!/usr/bin/env bash
# The Omniglot study end to end: class manifests, every training run, one evaluation.
#
#   bash experiments/omniglot/run.sh [--quick] [--out DIR] [--data DIR] [--only RUN ...] [--methods LABEL ...]
#                                    [--train-only] [--reuse EVAL_DIR ...]
#
# --out   run directory root (default runs/omniglot; --quick: runs/omniglot-quick)
# --data  folder holding images_background_small1.zip and _small2.zip (default ../shared/data/omniglot)
# --quick every run for a few steps and a few episodes, 2 test-time views instead of 16 (labels -2views)
#         and 2 test steps instead of 10 to 30 (labels -2steps): the whole pipeline in a few minutes
# --only  train just the named runs (repeatable), then evaluate whatever runs exist
# --methods  evaluate just the methods with these labels (repeatable; default: all that exist)
# --train-only  stop after training (evaluate later with --methods or a plain run)
# --reuse  an earlier evaluation directory (repeatable): its scores of unchanged methods are taken,
#          not measured again (fewshot.evaluate reuse=[...]); the previous <out>/eval is kept as
#          <out>/eval.prev for this
#
# A run directory that exists is resumed (a finished run is left as it is), and so is an
# unfinished evaluation (fewshot.evaluate resume=<out>/eval), so the script can be stopped and
# started again. The class manifests (make_splits.py) are written to <out> and used
# from there; wall-clock seconds per step go to <out>/timings.tsv; the evaluation goes to
# <out>/eval. The full study copies its report and manifests into experiments/omniglot/.
set -euo pipefail
cd "$(dirname "$0")/../.."
EXP=experiments/omniglot
QUICK=0 TRAIN_ONLY=0 OUT="" DATA=../shared/data/omniglot ONLY=() METHODS=() REUSE=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --train-only) TRAIN_ONLY=1 ;;
    --out) OUT="$2"; shift ;;
    --data) DATA="$2"; shift ;;
    --only) ONLY+=("$2"); shift ;;
    --methods) METHODS+=("$2"); shift ;;
    --reuse) REUSE+=("$2"); shift ;;
    *) echo "unknown option $1 (see the header of $0)" >&2; exit 2 ;;
  esac
  shift
done
for zip in images_background_small1.zip images_background_small2.zip; do
  [[ -f "$DATA/$zip" ]] || { echo "error: $DATA/$zip not found; pass --data <folder with the Omniglot zips>" >&2; exit 2; }
done
if [[ $QUICK == 1 ]]; then
  OUT="${OUT:-runs/omniglot-quick}"
  TRAIN_EXTRA=(train.steps=2 train.val_every=2 train.val_episodes=2 task.meta_batch=2 task.q_query=2
               train.batch_size=16 inner.test_steps=1)
  EVAL_EXTRA=(episodes=2 batch_episodes=2 q_query=2 finetune.epochs=1 name=eval)
  NVIEWS=2  # test-time views: 2 where the study averages 16, and so labelled (-2views)
  NSTEPS=2  # test steps: 2 where the study takes 10 to 30, and so labelled (-2steps)
else
  OUT="${OUT:-runs/omniglot}"
  TRAIN_EXTRA=()
  EVAL_EXTRA=(name=eval)
  NVIEWS=16
  NSTEPS=""  # each run's own (TEST_STEPS below)
fi
mkdir -p "$OUT"

timed() {  # timed <label> <command...>: run, and append "label<TAB>seconds" to timings.tsv
  local label="$1" start=$SECONDS
  shift
  "$@"
  printf '%s\t%s\n' "$label" "$((SECONDS - start))" >> "$OUT/timings.tsv"
}

wanted() { [[ ${#ONLY[@]} == 0 ]] || [[ " ${ONLY[*]} " == *" $1 "* ]]; }
chosen() { [[ ${#METHODS[@]} == 0 ]] || [[ " ${METHODS[*]} " == *" $1 "* ]]; }

# The training runs are queued (train), then run in order by one Python process (train_runs.py),
# which imports torch once instead of once a run.
QUEUE=$(mktemp)
trap 'rm -f "$QUEUE"' EXIT
queue() {  # queue <run name> <fewshot.train arguments...>: NUL after each argument, one more after the run
  local arg
  for arg in "$@"; do
    [[ -n $arg ]] || { echo "error: run $1 has an empty argument" >&2; exit 2; }
  done
  printf '%s\0' "$@" >> "$QUEUE"
  printf '\0' >> "$QUEUE"
}

train() {  # train <run name> <learner> <config> [overrides...]
  local name="$1" learner="$2" config="$3"
  shift 3
  wanted "$name" || return 0
  if [[ -d "$OUT/$name" ]]; then
    [[ -f "$OUT/$name/last.pt" ]] || { echo "error: $OUT/$name exists but has no last.pt; remove it" >&2; exit 2; }
    queue "$name" "$learner" "train.resume=$OUT/$name" train.quiet=true
  else
    queue "$name" "$learner" --config "$EXP/base.yaml" --config "$EXP/$config.yaml" \
      "data.root=$DATA/images_background_small1.zip" "data.split.manifest=$OUT/small1_split.json" \
      "train.out_dir=$OUT" "train.name=$name" \
      train.quiet=true "$@" "${TRAIN_EXTRA[@]}"
  fi
}

python "$EXP/make_splits.py" --data "$DATA" --out "$OUT"
PRE="model.pretrained=$OUT/pretrain/best.pt"
TRAINVAL="data.split.manifest=$OUT/small1_trainval.json"  # every small1 character as a base class
train pretrain pretrain pretrain
train protonet protonet protonet
# ProtoNet from the pretrained backbone (Chen et al. 2021's Meta-Baseline order: classify, then
# meta-train), at half the step size so the first episodes do not undo the pretraining.
train protonet-pretrained protonet protonet "$PRE" optim.lr=0.0005 train.steps=6000
train maml maml maml
train maml-pretrained maml maml "$PRE"
train fomaml fomaml fomaml
# The pretrained backbone's features are larger than a fresh network's: its inner lr is chosen on
# the held-out characters (at initialization, 5-way 1-shot: 27% with 0.4, 81% with 0.05).
train fomaml-pretrained fomaml fomaml "$PRE" inner.lr=0.05
train protomaml-pretrained fomaml protomaml "$PRE"
# Proto-MAML from ProtoNet's backbone: it starts exactly where ProtoNet ends (class-mean head),
# so a smaller outer step than from the pretrained backbone, where 5e-4 lowered validation.
train protomaml-protonet fomaml protomaml "model.pretrained=$OUT/protonet/best.pt" optim.lr=0.0001
train maml20-pretrained maml maml20 "$PRE"
train reptile reptile reptile
train reptile-pretrained reptile reptile "$PRE"
# Mirror images as classes of their own too (data.reflections; session 19): 928 base classes
# instead of 464. protomaml-protonet-flip is protomaml-protonet from protonet-flip, and
# maml-pretrained-flip is maml-pretrained from pretrain-flip.
train pretrain-flip pretrain pretrain data.reflections=true
train protonet-flip protonet protonet data.reflections=true
train protomaml-protonet-flip fomaml protomaml "model.pretrained=$OUT/protonet-flip/best.pt" optim.lr=0.0001 \
  data.reflections=true
train maml-pretrained-flip maml maml "model.pretrained=$OUT/pretrain-flip/best.pt" data.reflections=true
# protonet-flip with strokes also bent by a smooth random field (data.augment=affine-elastic;
# session 21), as another drawer would bend them.
train protonet-flip-elastic protonet protonet data.reflections=true data.augment=affine-elastic
# protonet-flip trained on 5-shot episodes (Snell et al. train with the test's shot), validated on
# 20-way 5-shot: for the 5-shot settings.
train protonet5-flip protonet protonet data.reflections=true task.k_shot=5 train.val_setting=20w5s
# protonet-flip with twice the filters in every block (session 22).
train protonet-flip-w128 protonet protonet data.reflections=true model.backbone=conv4-128
# Second-order Proto-MAML from protonet-flip (session 22): protomaml-protonet-flip with the
# second-order terms, for 1,200 steps instead of 4,000 (a step costs about 2.5 times as much).
train protomaml2-protonet-flip maml protomaml "model.pretrained=$OUT/protonet-flip/best.pt" optim.lr=0.0001 \
  data.reflections=true inner.first_order=false train.steps=1200 train.val_every=300
# protonet-flip for 5,000 steps instead of 3,000 (session 23), and on all 136 small1 characters
# (the 20 validation ones too: small1_trainval.json), with the settings validation chose for
# protonet-flip; the validation score of a -trainval run is on training classes, so it is scored
# from its last checkpoint, not its best.
train protonet-flip-5k protonet protonet data.reflections=true train.steps=5000 train.val_every=1000
train protonet-flip-trainval protonet protonet data.reflections=true "$TRAINVAL"
train protonet-flip-5k-trainval protonet protonet data.reflections=true train.steps=5000 train.val_every=1000 "$TRAINVAL"
# Its second and third seeds (session 24's command for the second; run.sh trains both since
# session 27, for the ensembles below).
for seed in 1 2; do
  train protonet-flip-5k-trainval-s$seed protonet protonet data.reflections=true train.steps=5000 train.val_every=1000 \
    "$TRAINVAL" train.seed=$seed
done
# Proto-MAML from protonet-flip-5k-trainval (session 24), on the same classes, for 2,500 steps.
train protomaml-protonet-flip-5k-trainval fomaml protomaml "model.pretrained=$OUT/protonet-flip-5k-trainval/last.pt" \
  optim.lr=0.0001 data.reflections=true "$TRAINVAL" train.steps=2500 \
  train.val_every=500
# From protonet-flip's backbone (session 25): second-order MAML with a fresh head (does the plain
# meta-learner clear the task's floor from the best embedding? its inner lr is the best at
# initialization on the held-out characters, 5-way 1-shot, 3 steps: 87.42% with 0.1, 83.24% with
# 0.05, 42.84% with 0.4), and Reptile with Proto-MAML's class-mean head (protoreptile.yaml).
train maml-protonet-flip maml maml "model.pretrained=$OUT/protonet-flip/best.pt" data.reflections=true inner.lr=0.1
train protoreptile-protonet-flip reptile protoreptile "model.pretrained=$OUT/protonet-flip/best.pt" \
  data.reflections=true
# protonet-flip and protonet-flip-5k-trainval without the last block's max-pool (session 26): 576
# features that keep where in the image each stroke was (64 x 3 x 3), the same parameters.
train protonet-flip-nopool protonet protonet data.reflections=true model.backbone=conv4-nopool
train protonet-flip-5k-trainval-nopool protonet protonet data.reflections=true train.steps=5000 train.val_every=1000 \
  "$TRAINVAL" model.backbone=conv4-nopool
# Second-order MAML with a zero head (maml-zero.yaml; session 28) from protonet-flip-5k-trainval, at
# the outer lr of the other runs from ProtoNet's backbone (inner lr at initialization, 5-way 1-shot,
# 2 steps, 100 episodes of its validation characters, which it trained on: 97.64% with 0.2, 93.88%
# with 0.1, 79.32% with 0.05; 1 step: 65.08% with any lr, the dot product with class means).
train maml-zero-protonet-flip-5k-trainval maml maml-zero \
  "model.pretrained=$OUT/protonet-flip-5k-trainval/last.pt" optim.lr=0.0001 data.reflections=true "$TRAINVAL"
# The same from pretrain-flip's backbone, as maml-pretrained-flip (inner lr at initialization on
# the held-out characters, 2 steps, 100 episodes: 91.24% with 0.4, 94.16% with 0.2, 94.84% with 0.1,
# 88.48% with 0.05).
train maml-zero-pretrained-flip maml maml-zero "model.pretrained=$OUT/pretrain-flip/best.pt" inner.lr=0.1 \
  data.reflections=true
# Session 29. The ProtoNet-started run's start, not meta-trained: one step at outer lr 0 leaves
# protonet-flip-5k-trainval's network as it is (compared bit for bit), so with a zero head and the
# same test steps it is plain fine-tuning of ProtoNet's network on each support set, and against
# maml-zero-protonet-flip-5k-trainval it measures what the hour of meta-training adds.
train maml-zero-protonet-flip-5k-trainval-init maml maml-zero \
  "model.pretrained=$OUT/protonet-flip-5k-trainval/last.pt" optim.lr=0 train.steps=1 train.val_every=1 \
  data.reflections=true "$TRAINVAL"
# The same for maml-zero-pretrained-flip's start (pretrain-flip's backbone, inner lr 0.1).
train maml-zero-pretrained-flip-init maml maml-zero "model.pretrained=$OUT/pretrain-flip/best.pt" inner.lr=0.1 \
  optim.lr=0 train.steps=1 train.val_every=1 data.reflections=true
# First-order MAML with a zero head from the same start, otherwise as the second-order run.
train fomaml-zero-protonet-flip-5k-trainval fomaml maml-zero inner.first_order=true \
  "model.pretrained=$OUT/protonet-flip-5k-trainval/last.pt" optim.lr=0.0001 data.reflections=true "$TRAINVAL"
# The same for three times the steps (about the second-order run's hour): its first 1,500 steps are
# the run above (constant outer lr, same seed).
train fomaml-zero-protonet-flip-5k-trainval-4500 fomaml maml-zero inner.first_order=true \
  "model.pretrained=$OUT/protonet-flip-5k-trainval/last.pt" optim.lr=0.0001 data.reflections=true "$TRAINVAL" \
  train.steps=4500 train.val_every=500
# Session 30. Meta-SGD with the same zero head and start, second order as maml-zero-protonet-flip-5k-trainval
# and first order as fomaml-zero-protonet-flip-5k-trainval-4500: every parameter entry's inner lr is
# meta-learned with the initialization (from 0.2, by the same Adam at 1e-4), so the adaptation rule
# that session 29 found short of nearest centroid is learned too.
train metasgd-zero-protonet-flip-5k-trainval metasgd maml-zero \
  "model.pretrained=$OUT/protonet-flip-5k-trainval/last.pt" optim.lr=0.0001 data.reflections=true "$TRAINVAL"
train metasgd-fo-zero-protonet-flip-5k-trainval-4500 metasgd maml-zero inner.first_order=true \
  "model.pretrained=$OUT/protonet-flip-5k-trainval/last.pt" optim.lr=0.0001 data.reflections=true "$TRAINVAL" \
  train.steps=4500 train.val_every=500
# Session 31. Reptile with the same zero head and start (reptile-zero.yaml): 5-way 5-shot tasks, 5 SGD
# steps of 0.2 (the rule of maml-zero-protonet-flip-5k-trainval-init, which is also this run's start),
# Adam 1e-4 on the Reptile direction, 1,500 steps; every inner step on all 25 support images, and
# (-mb) each step on a different image of every class (inner.step_shots=1; Nichol et al.'s minibatches).
train reptile-zero-protonet-flip-5k-trainval reptile reptile-zero \
  "model.pretrained=$OUT/protonet-flip-5k-trainval/last.pt" data.reflections=true "$TRAINVAL"
train reptile-zero-mb-protonet-flip-5k-trainval reptile reptile-zero inner.step_shots=1 \
  "model.pretrained=$OUT/protonet-flip-5k-trainval/last.pt" data.reflections=true "$TRAINVAL"
# The same on 5-way 1-shot tasks (as maml-zero.yaml's): the 5-shot runs lost to their start at 1 shot.
train reptile-zero-1shot-protonet-flip-5k-trainval reptile reptile-zero task.k_shot=1 \
  "model.pretrained=$OUT/protonet-flip-5k-trainval/last.pt" data.reflections=true "$TRAINVAL"
# And on 10-shot tasks with 2 images of every class per inner step (Nichol et al. train their 1-shot
# models on 10-shot tasks in minibatches): as much data per step as the 5-shot run, new images at every step.
train reptile-zero-10shot-mb-protonet-flip-5k-trainval reptile reptile-zero task.k_shot=10 inner.step_shots=2 train.val_setting=5w1s \
  "model.pretrained=$OUT/protonet-flip-5k-trainval/last.pt" data.reflections=true "$TRAINVAL"
# Session 32. Two more of the listed Reptile runs: 10-shot tasks with one image of every class per inner
# step (10 steps, so every image once), and 20-way 5-shot tasks with one image of every class per step.
train reptile-zero-10shot-mb1-protonet-flip-5k-trainval reptile reptile-zero task.k_shot=10 inner.step_shots=1 \
  inner.steps=10 train.val_setting=5w1s "model.pretrained=$OUT/protonet-flip-5k-trainval/last.pt" data.reflections=true \
  "$TRAINVAL"
train reptile-zero-20way-mb-protonet-flip-5k-trainval reptile reptile-zero task.n_way=20 inner.step_shots=1 \
  train.val_setting=20w1s "model.pretrained=$OUT/protonet-flip-5k-trainval/last.pt" data.reflections=true "$TRAINVAL"
# The best of them, -10shot-mb-, for three times the steps (its first 1,500 are that run: constant outer lr, same
# seed), with a second seed, and both.
train reptile-zero-10shot-mb-4500-protonet-flip-5k-trainval reptile reptile-zero task.k_shot=10 inner.step_shots=2 \
  train.val_setting=5w1s "model.pretrained=$OUT/protonet-flip-5k-trainval/last.pt" data.reflections=true "$TRAINVAL" \
  train.steps=4500 train.val_every=500
train reptile-zero-10shot-mb-protonet-flip-5k-trainval-s1 reptile reptile-zero task.k_shot=10 inner.step_shots=2 \
  train.val_setting=5w1s "model.pretrained=$OUT/protonet-flip-5k-trainval/last.pt" data.reflections=true "$TRAINVAL" \
  train.seed=1
train reptile-zero-10shot-mb-4500-protonet-flip-5k-trainval-s1 reptile reptile-zero task.k_shot=10 inner.step_shots=2 \
  train.val_setting=5w1s "model.pretrained=$OUT/protonet-flip-5k-trainval/last.pt" data.reflections=true "$TRAINVAL" \
  train.steps=4500 train.val_every=500 train.seed=1
# Session 33. A third seed of the 4,500-step run, and the same Reptile from the supervised backbone (pretrain-flip,
# inner lr 0.1 as maml-zero-pretrained-flip and its not-meta-trained control; validated on the held-out characters),
# with two seeds.
train reptile-zero-10shot-mb-4500-protonet-flip-5k-trainval-s2 reptile reptile-zero task.k_shot=10 inner.step_shots=2 \
  train.val_setting=5w1s "model.pretrained=$OUT/protonet-flip-5k-trainval/last.pt" data.reflections=true "$TRAINVAL" \
  train.steps=4500 train.val_every=500 train.seed=2
train reptile-zero-10shot-mb-4500-pretrained-flip reptile reptile-zero task.k_shot=10 inner.step_shots=2 \
  train.val_setting=5w1s "model.pretrained=$OUT/pretrain-flip/best.pt" inner.lr=0.1 data.reflections=true \
  train.steps=4500 train.val_every=500
train reptile-zero-10shot-mb-4500-pretrained-flip-s1 reptile reptile-zero task.k_shot=10 inner.step_shots=2 \
  train.val_setting=5w1s "model.pretrained=$OUT/pretrain-flip/best.pt" inner.lr=0.1 data.reflections=true \
  train.steps=4500 train.val_every=500 train.seed=1
# Meta-SGD's rates with an outer lr of their own, ten times the weights' (session 30's moved by 0.15 at most):
# otherwise metasgd-zero-protonet-flip-5k-trainval.
train metasgd-zero-rates1e-3-protonet-flip-5k-trainval metasgd maml-zero optim.rates_lr=0.001 \
  "model.pretrained=$OUT/protonet-flip-5k-trainval/last.pt" optim.lr=0.0001 data.reflections=true "$TRAINVAL"
# Session 34. Meta-SGD from the supervised backbone, otherwise maml-zero-pretrained-flip: pretrain-flip's network,
# the rates starting at its inner lr 0.1, one outer lr of 1e-3 (maml-zero.yaml's) for weights and rates alike,
# validated on the held-out characters.
train metasgd-zero-pretrained-flip metasgd maml-zero "model.pretrained=$OUT/pretrain-flip/best.pt" inner.lr=0.1 \
  data.reflections=true
# Its second seed, and the same with session 33's split of outer lrs (weights 1e-4, rates 1e-3).
train metasgd-zero-pretrained-flip-s1 metasgd maml-zero "model.pretrained=$OUT/pretrain-flip/best.pt" inner.lr=0.1 \
  data.reflections=true train.seed=1
train metasgd-zero-rates1e-3-pretrained-flip metasgd maml-zero "model.pretrained=$OUT/pretrain-flip/best.pt" inner.lr=0.1 \
  data.reflections=true optim.lr=0.0001 optim.rates_lr=0.001
# A third seed of the supervised-start Reptile.
train reptile-zero-10shot-mb-4500-pretrained-flip-s2 reptile reptile-zero task.k_shot=10 inner.step_shots=2 \
  train.val_setting=5w1s "model.pretrained=$OUT/pretrain-flip/best.pt" inner.lr=0.1 data.reflections=true \
  train.steps=4500 train.val_every=500 train.seed=2
# Session 35. Second seeds of the remade zero-head MAML from the supervised backbone and of the split-lr
# Meta-SGD there.
train maml-zero-pretrained-flip-s1 maml maml-zero "model.pretrained=$OUT/pretrain-flip/best.pt" inner.lr=0.1 \
  data.reflections=true train.seed=1
train metasgd-zero-rates1e-3-pretrained-flip-s1 metasgd maml-zero "model.pretrained=$OUT/pretrain-flip/best.pt" \
  inner.lr=0.1 data.reflections=true optim.lr=0.0001 optim.rates_lr=0.001 train.seed=1
# The supervised-start Reptile with half and twice its inner lr (0.1 was chosen for MAML at initialization,
# 0.2 is the ProtoNet-started Reptile's); otherwise reptile-zero-10shot-mb-4500-pretrained-flip.
train reptile-zero-10shot-mb-4500-pretrained-flip-lr0.05 reptile reptile-zero task.k_shot=10 inner.step_shots=2 \
  train.val_setting=5w1s "model.pretrained=$OUT/pretrain-flip/best.pt" inner.lr=0.05 data.reflections=true \
  train.steps=4500 train.val_every=500
train reptile-zero-10shot-mb-4500-pretrained-flip-lr0.2 reptile reptile-zero task.k_shot=10 inner.step_shots=2 \
  train.val_setting=5w1s "model.pretrained=$OUT/pretrain-flip/best.pt" inner.lr=0.2 data.reflections=true \
  train.steps=4500 train.val_every=500
# A second seed of the inner lr validation ranked first.
train reptile-zero-10shot-mb-4500-pretrained-flip-lr0.05-s1 reptile reptile-zero task.k_shot=10 inner.step_shots=2 \
  train.val_setting=5w1s "model.pretrained=$OUT/pretrain-flip/best.pt" inner.lr=0.05 data.reflections=true \
  train.steps=4500 train.val_every=500 train.seed=1
# Session 36. A third seed of the remade zero-head MAML from the supervised backbone (its first two are up to 1.54
# points apart), and a second seed of the split-lr Meta-SGD from ProtoNet's network.
train maml-zero-pretrained-flip-s2 maml maml-zero "model.pretrained=$OUT/pretrain-flip/best.pt" inner.lr=0.1 \
  data.reflections=true train.seed=2
train metasgd-zero-rates1e-3-protonet-flip-5k-trainval-s1 metasgd maml-zero optim.rates_lr=0.001 \
  "model.pretrained=$OUT/protonet-flip-5k-trainval/last.pt" optim.lr=0.0001 data.reflections=true "$TRAINVAL" \
  train.seed=1
# Meta-SGD from the supervised backbone with every learned rate kept at or above zero (inner.min_lr=0,
# projected after each outer step; metasgd-zero-pretrained-flip's head bias and last BatchNorm shift took
# negative rates), otherwise as that run.
train metasgd-zero-min0-pretrained-flip metasgd maml-zero "model.pretrained=$OUT/pretrain-flip/best.pt" inner.lr=0.1 \
  data.reflections=true inner.min_lr=0
train metasgd-zero-min0-pretrained-flip-s1 metasgd maml-zero "model.pretrained=$OUT/pretrain-flip/best.pt" inner.lr=0.1 \
  data.reflections=true inner.min_lr=0 train.seed=1
# The same without the floor but meta-trained with 10 inner steps, as many as every Meta-SGD run here is scored
# with (sessions 30 to 35 learned the rates for 2). Validated with maml-zero.yaml's 2 test steps, as the others.
train metasgd-zero-10steps-pretrained-flip metasgd maml-zero "model.pretrained=$OUT/pretrain-flip/best.pt" inner.lr=0.1 \
  data.reflections=true inner.steps=10
# protomaml-protonet-flip-5k-trainval's start, not meta-trained (one step at outer lr 0, as the -init runs of
# session 29): ProtoNet's network adapted by Proto-MAML's rule (class-mean head, 3 SGD steps of 0.01).
train protomaml-protonet-flip-5k-trainval-init fomaml protomaml "model.pretrained=$OUT/protonet-flip-5k-trainval/last.pt" \
  optim.lr=0 train.steps=1 train.val_every=1 data.reflections=true "$TRAINVAL"
# pretrain-flip with a cosine classifier over the 928 classes (model.head=cosine, its scale learned from 10;
# Chen et al.'s Baseline++): does pretraining that scores classes by direction alone make a better embedding?
train pretrain-flip-cos pretrain pretrain data.reflections=true model.head=cosine
# Session 37. A second seed of the supervised-start Reptile at inner lr 0.2 (its first lost 2.1 points to 0.1 at
# 20-way 5-shot, session 35).
train reptile-zero-10shot-mb-4500-pretrained-flip-lr0.2-s1 reptile reptile-zero task.k_shot=10 inner.step_shots=2 \
  train.val_setting=5w1s "model.pretrained=$OUT/pretrain-flip/best.pt" inner.lr=0.2 data.reflections=true \
  train.steps=4500 train.val_every=500 train.seed=1
# Session 37. protonet-flip-5k-trainval distilled into a network of its own size (born-again networks,
# Furlanello et al. 2018; Tian et al. 2020 for few-shot): the same recipe, each episode's loss half
# cross-entropy and half the KL divergence from that run's ProtoNet predictions at temperature 4
# (distill.weight=0.5, distill.temperature=4). Seed 0 differs from its teacher in the loss alone;
# seed 1 pairs with protonet-flip-5k-trainval-s1, the best network within the protocol.
for seed in 0 1; do
  suffix=$([[ $seed == 0 ]] || echo "-s$seed")
  train protonet-flip-5k-trainval-distill$suffix protonet protonet data.reflections=true train.steps=5000 \
    train.val_every=1000 "$TRAINVAL" "distill.teacher=$OUT/protonet-flip-5k-trainval/last.pt" train.seed=$seed
done
# The same (seed 0) with the first two seeds as one teacher, whose logits are the sum of the two networks'
# (session 27's pair scored above either seed): temperature 8 on the sum is each network's mean at 4.
train protonet-flip-5k-trainval-distill-x2 protonet protonet data.reflections=true train.steps=5000 train.val_every=1000 \
  "$TRAINVAL" "distill.teacher=$OUT/protonet-flip-5k-trainval/last.pt,$OUT/protonet-flip-5k-trainval-s1/last.pt" \
  distill.temperature=8
# Session 38. protonet-flip-5k-trainval for 10,000 steps instead of 5,000 (3,000 -> 5,000 gained at every
# setting, session 23): on session 37's machine 5,000 steps take about 29 minutes of one thread, so 10,000
# fit the task's hour per run. Seeds 0 and 1.
for seed in 0 1; do
  suffix=$([[ $seed == 0 ]] || echo "-s$seed")
  train protonet-flip-10k-trainval$suffix protonet protonet data.reflections=true train.steps=10000 \
    train.val_every=2000 "$TRAINVAL" train.seed=$seed
done
# 10,000 steps gained over 5,000 with views at 20 ways (both seeds), so 16,000 with both threads of the
# two cores (about 5 steps a second alone there, OMP_NUM_THREADS=2): the longest run the hour allows.
train protonet-flip-16k-trainval protonet protonet data.reflections=true train.steps=16000 train.val_every=4000 \
  "$TRAINVAL"
# Session 39. bf16 autocast on the CPU (train.bf16=true): with AVX512-BF16 steps run 1.7 times as fast
# here. First protonet-flip-5k-trainval in bf16, to see that it learns as well in float32.
train protonet-flip-5k-trainval-bf16 protonet protonet data.reflections=true train.steps=5000 \
  train.val_every=1000 "$TRAINVAL" train.bf16=true
# It did (README), so the hour holds 28,000 bf16 steps on both threads (about 8.4 steps a second alone).
# Seeds 0 and 1.
for seed in 0 1; do
  suffix=$([[ $seed == 0 ]] || echo "-s$seed")
  train protonet-flip-28k-trainval-bf16$suffix protonet protonet data.reflections=true train.steps=28000 \
    train.val_every=4000 "$TRAINVAL" train.bf16=true train.seed=$seed
done
# Session 40. 28,000 steps gained nothing over 16,000, so the bf16 speed goes to the episode instead:
# 16,000 steps of 120-way episodes (twice the classes of protonet-flip-16k-trainval's, about 4.5 steps a
# second alone here), to see whether more classes per step help where more steps no longer do. Seeds 0 and 1.
for seed in 0 1; do
  suffix=$([[ $seed == 0 ]] || echo "-s$seed")
  train protonet-flip-16k-trainval-bf16-120way$suffix protonet protonet data.reflections=true train.steps=16000 \
    train.val_every=4000 "$TRAINVAL" train.bf16=true task.n_way=120 train.seed=$seed
done
# Session 41. The same 720 images a step as 60 classes with 11 queries each instead of 120 with 5 (about
# 4.4 steps a second alone here), and the exact control of both and of the 120-way runs: 60-way, 5 queries,
# 16,000 bf16 steps, seeds 0 and 1.
train protonet-flip-16k-trainval-bf16-11query protonet protonet data.reflections=true train.steps=16000 \
  train.val_every=4000 "$TRAINVAL" train.bf16=true task.q_query=11
for seed in 0 1; do
  suffix=$([[ $seed == 0 ]] || echo "-s$seed")
  train protonet-flip-16k-trainval-bf16$suffix protonet protonet data.reflections=true train.steps=16000 \
    train.val_every=4000 "$TRAINVAL" train.bf16=true train.seed=$seed
done
# Session 42. protonet-flip in bf16 (3,000 steps, 20 characters held out): the network on whose held-out
# characters a test-time transform of the features is chosen (README), as views and refinement were.
train protonet-flip-bf16 protonet protonet data.reflections=true train.bf16=true
# Session 43. The same with two alphabets held out whole (Greek and Korean, 64 characters; 72 trained on):
# the network on whose held-out alphabets test-time choices that depend on new alphabets are made.
train protonet-flip-bf16-alphabets protonet protonet data.reflections=true train.bf16=true \
  "data.split.manifest=$OUT/small1_alphabets.json"
# The same on a second alphabet split (Balinese and Latin held out, 50 characters; 86 trained on), where that
# choice is checked.
train protonet-flip-bf16-alphabets2 protonet protonet data.reflections=true train.bf16=true \
  "data.split.manifest=$OUT/small1_alphabets2.json"
# Session 44. The two splits disagree about the shrinkage, so a third decides it: Early Aramaic and Korean
# held out (62 characters; 74 trained on), so that every alphabet is held out by some split.
train protonet-flip-bf16-alphabets3 protonet protonet data.reflections=true train.bf16=true \
  "data.split.manifest=$OUT/small1_alphabets3.json"
# Session 45. The last block's 2x2 max-pool sees only the top-left 2x2 of its 3x3 map at 28x28; pooling all
# nine positions (model.backbone=conv4-globalmax, the same parameters) gained on the first alphabet split,
# so the three validation networks are remade with it, to choose its whitening on held-out alphabets ...
for split in "" 2 3; do
  train protonet-flip-bf16-alphabets$split-globalmax protonet protonet data.reflections=true train.bf16=true \
    "data.split.manifest=$OUT/small1_alphabets$split.json" model.backbone=conv4-globalmax
done
# ... and the 60-way control is remade with it: 16,000 bf16 steps on all 136 characters, seeds 0 and 1.
for seed in 0 1; do
  suffix=$([[ $seed == 0 ]] || echo "-s$seed")
  train protonet-flip-16k-trainval-bf16-globalmax$suffix protonet protonet data.reflections=true train.steps=16000 \
    train.val_every=4000 "$TRAINVAL" train.bf16=true model.backbone=conv4-globalmax train.seed=$seed
done
# Session 46. Of four more changes screened on the first alphabet split (README), only training episodes whose
# 60 classes all come from one alphabet (task.within_group=true) gained, at 20-way 5-shot: the same 16,000
# steps with it, seeds 0 and 1.
for seed in 0 1; do
  suffix=$([[ $seed == 0 ]] || echo "-s$seed")
  train protonet-flip-16k-trainval-bf16-globalmax-within$suffix protonet protonet data.reflections=true \
    train.steps=16000 train.val_every=4000 "$TRAINVAL" train.bf16=true model.backbone=conv4-globalmax \
    task.within_group=true train.seed=$seed
done
# Session 47. Proto-MAML's rule (a class-mean head, then 3 SGD steps of 0.01 through the whole network) from the
# conv4-globalmax networks, not meta-trained (one step at outer lr 0, as the -init runs of session 29), scored with
# test-time views that go through the backbone as it adapts (@views=16; README): from the first alphabet split's
# validation network, where it was chosen, and from the four 16,000-step networks.
train protomaml-protonet-flip-bf16-alphabets-globalmax-init fomaml protomaml \
  "model.pretrained=$OUT/protonet-flip-bf16-alphabets-globalmax/best.pt" optim.lr=0 train.steps=1 train.val_every=1 \
  data.reflections=true "data.split.manifest=$OUT/small1_alphabets.json" model.backbone=conv4-globalmax
for start in protonet-flip-16k-trainval-bf16-globalmax{,-s1,-within,-within-s1}; do
  train protomaml-$start-init fomaml protomaml "model.pretrained=$OUT/$start/last.pt" optim.lr=0 train.steps=1 \
    train.val_every=1 data.reflections=true "$TRAINVAL" model.backbone=conv4-globalmax
done
# Session 51. Characters decoded at 36x36 instead of 28x28 (the same conv4-globalmax network: its last block's
# maximum is over a 4x4 map instead of 3x3) gained at 20-way 5-shot on the first alphabet split's held-out alphabets
# over two seeds, and lost at 1 shot (README): the 60-way bf16 network on all 136 characters at that size, for
# 14,000 steps (about an hour: each step costs about 1.5 times a 28x28 one). Scored by its own evaluation at
# data.image_size=36 (README), not in this script's, whose episodes are decoded at 28x28.
train protonet-flip-14k-trainval-bf16-globalmax-36px protonet protonet data.reflections=true train.steps=14000 \
  train.val_every=3500 "$TRAINVAL" train.bf16=true model.backbone=conv4-globalmax data.image_size=36
# Session 52. The same gain within the task's 28x28 images? The same network with its 28x28 input resized to 36x36
# first (conv4-globalmax-up36: bilinear, no parameters; its maps are those of the 36x36 run, the detail is 28x28's),
# for 13,000 steps to fit the hour, seeds 0 and 1. Scored at 28x28 by its own evaluation (README).
for seed in 0 1; do
  suffix=$([[ $seed == 0 ]] || echo "-s$seed")
  train protonet-flip-13k-trainval-bf16-globalmax-up36$suffix protonet protonet data.reflections=true \
    train.steps=13000 train.val_every=3250 "$TRAINVAL" train.bf16=true model.backbone=conv4-globalmax-up36 \
    train.seed=$seed
done
# Session 53. A third seed, for 12,500 steps so that it fits the hour on this machine whatever the seed (seed 1's
# 13,000 took 62 minutes); session 54, a fourth.
for seed in 2 3; do
  train protonet-flip-12.5k-trainval-bf16-globalmax-up36-s$seed protonet protonet data.reflections=true \
    train.steps=12500 train.val_every=3125 "$TRAINVAL" train.bf16=true model.backbone=conv4-globalmax-up36 \
    train.seed=$seed
done
# Session 55: the supervised backbone with the changes that lifted ProtoNet (bf16, the last block pooled over all
# its positions, the images resized to 36x36 inside the network), for 12,000 steps, validated on the held-out
# characters (best.pt); and zero-head Reptile from it for 3,000 steps, its inner lr chosen there at initialization
# as session 28 chose pretrain-flip's (2 steps, 5-way 1-shot), in fp32 (bf16 made its many small steps 3 times slower).
train pretrain-flip-12k-bf16-globalmax-up36 pretrain pretrain data.reflections=true train.bf16=true \
  model.backbone=conv4-globalmax-up36 train.steps=12000 train.val_every=1000
PRE36="model.pretrained=$OUT/pretrain-flip-12k-bf16-globalmax-up36/best.pt"  # its best.pt, the start of the runs below
# the overrides its zero-head Reptile runs share (validated at 5-way 1-shot), and those of all but session 60's
# (10-shot tasks, 2 images a class per step)
REPTILE36_BASE=(train.val_setting=5w1s "$PRE36" model.backbone=conv4-globalmax-up36 data.reflections=true)
REPTILE36=(task.k_shot=10 inner.step_shots=2 "${REPTILE36_BASE[@]}")
SGD_OUTER=(optim.name=sgd optim.lr=1.0 optim.momentum=0 optim.schedule=cosine)  # Nichol et al.'s outer step (session 59)
train reptile-zero-10shot-mb-3k-pretrained-flip-12k-bf16-globalmax-up36 reptile reptile-zero "${REPTILE36[@]}" \
  inner.lr=0.1 train.steps=3000 train.val_every=500
# Session 56: the same Reptile at inner lr 0.02, the rate that scores best at initialization with the 10 test steps
# it is scored with (inner_lr_at_init.py on the validation characters; 0.1 was chosen with 2 steps).
train reptile-zero-10shot-mb-3k-lr0.02-pretrained-flip-12k-bf16-globalmax-up36 reptile reptile-zero "${REPTILE36[@]}" \
  inner.lr=0.02 train.steps=3000 train.val_every=500
# Its start, not meta-trained (one step at outer lr 0, as session 29's -init runs): the backbone fine-tuned on each
# support set from a zero head by the same rule, to measure what meta-training adds.
train reptile-zero-10shot-mb-lr0.02-pretrained-flip-12k-bf16-globalmax-up36-init reptile reptile-zero \
  "${REPTILE36[@]}" inner.lr=0.02 optim.lr=0 train.steps=1 train.val_every=1
# Session 57: first-order MAML with a zero head from the same backbone, meta-trained with the rule it is scored with
# (10 SGD steps of 0.02, the rate that start prefers at 10 steps) on 5-way 5-shot tasks, where that rule from the
# start is weakest; Adam 1e-4 as the zero-head runs from ProtoNet's network; meta-batch 8 for 1,000 steps (about 40
# minutes on two cores), validated on 20-way 5-shot held-out episodes so that best.pt is not picked for 5 ways alone.
FOMAML36=(inner.first_order=true task.k_shot=5 inner.lr=0.02 optim.lr=0.0001 data.reflections=true
          model.backbone=conv4-globalmax-up36 "$PRE36" train.val_episodes=100 train.val_setting=20w5s)
train fomaml-zero-5shot-lr0.02-pretrained-flip-12k-bf16-globalmax-up36 fomaml maml-zero "${FOMAML36[@]}" \
  inner.steps=10 inner.test_steps=10 train.steps=1000 train.val_every=250
# Session 58: the same, meta-trained with the 30 test steps validation picks for it (about 2.4 times the cost a
# task): meta-batch 4 for 1,000 steps (as many Adam steps as session 57's, half the tasks; about 40 minutes on two
# cores), validated at steps 500 and 1,000 only (100 20-way 5-shot episodes with 30 steps take about 4 minutes).
train fomaml-zero-5shot-30steps-lr0.02-pretrained-flip-12k-bf16-globalmax-up36 fomaml maml-zero "${FOMAML36[@]}" \
  inner.steps=30 inner.test_steps=30 task.meta_batch=4 train.steps=1000 train.val_every=500
# Session 59: session 56's Reptile at 0.02 with a plain SGD outer step (Nichol et al.: theta moves by epsilon times the
# mean Reptile direction, epsilon from 1 to 0, here on a cosine, no momentum) instead of Adam, which scales each outer
# step to about its lr however small and noisy the direction is; all else as session 56's run.
train reptile-zero-10shot-mb-3k-lr0.02-sgd1-pretrained-flip-12k-bf16-globalmax-up36 reptile reptile-zero \
  "${REPTILE36[@]}" inner.lr=0.02 "${SGD_OUTER[@]}" train.steps=3000 train.val_every=500
# Session 60: Reptile whose inner loop is the rule it is scored with (30 SGD steps of 0.02 on the whole 5-way 5-shot
# support set; session 58 found first-order MAML stopped losing to its start only when trained with it), with
# session 59's plain SGD outer step; about 1.5 tasks a second on two cores, so meta-batch 5 for 800 steps (4,000
# tasks, about 50 minutes), validated every 200 steps.
train reptile-zero-5shot-30steps-sgd1-pretrained-flip-12k-bf16-globalmax-up36 reptile reptile-zero \
  "${REPTILE36_BASE[@]}" inner.lr=0.02 inner.steps=30 inner.test_steps=30 task.meta_batch=5 "${SGD_OUTER[@]}" \
  train.steps=800 train.val_every=200
# Session 61: the same 30-step inner loop on changing 2-image minibatches of 10-shot tasks (session 56's minibatches,
# so the inner steps see different examples, as in Nichol et al.), after session 60's 500-step screen held its start
# on held-out characters; meta-batch 5 for 1,500 steps (7,500 tasks, about 55 minutes), validated every 500 steps.
train reptile-zero-10shot-mb-30steps-sgd1-pretrained-flip-12k-bf16-globalmax-up36 reptile reptile-zero \
  "${REPTILE36[@]}" inner.lr=0.02 inner.steps=30 inner.test_steps=30 task.meta_batch=5 "${SGD_OUTER[@]}" \
  train.steps=1500 train.val_every=500
python "$EXP/train_runs.py" "$QUEUE" "$OUT/timings.tsv"
[[ $TRAIN_ONLY == 1 ]] && { echo "training done: $OUT"; exit 0; }

# Test steps chosen on the validation characters (test_steps_on_val.py; README): these runs are
# scored as trained and, as <run>-<N>steps, with N test steps.
declare -A TEST_STEPS=([maml]=10 [maml-pretrained]=10 [maml-pretrained-flip]=10 [maml20-pretrained]=10 [fomaml-pretrained]=10 [fomaml]=10 [reptile]=30
                         [maml-protonet-flip]=25 [maml-zero-protonet-flip-5k-trainval]=10 [maml-zero-pretrained-flip]=10
                         [maml-zero-protonet-flip-5k-trainval-init]=10 [fomaml-zero-protonet-flip-5k-trainval]=10
                         [fomaml-zero-protonet-flip-5k-trainval-4500]=10 [maml-zero-pretrained-flip-init]=10
                         [metasgd-zero-protonet-flip-5k-trainval]=10 [metasgd-fo-zero-protonet-flip-5k-trainval-4500]=10
                         [metasgd-zero-rates1e-3-protonet-flip-5k-trainval]=10 [metasgd-zero-pretrained-flip]=10
                         [metasgd-zero-pretrained-flip-s1]=10 [metasgd-zero-rates1e-3-pretrained-flip]=10
                         [maml-zero-pretrained-flip-s1]=10 [metasgd-zero-rates1e-3-pretrained-flip-s1]=10
                         [maml-zero-pretrained-flip-s2]=10 [metasgd-zero-rates1e-3-protonet-flip-5k-trainval-s1]=10
                         [metasgd-zero-min0-pretrained-flip]=10 [metasgd-zero-min0-pretrained-flip-s1]=10
                         [metasgd-zero-10steps-pretrained-flip]=10
                         [reptile-zero-10shot-mb-3k-lr0.02-pretrained-flip-12k-bf16-globalmax-up36]=30
                         [reptile-zero-10shot-mb-lr0.02-pretrained-flip-12k-bf16-globalmax-up36-init]=30
                         [fomaml-zero-5shot-lr0.02-pretrained-flip-12k-bf16-globalmax-up36]=30
                         [reptile-zero-10shot-mb-3k-lr0.02-sgd1-pretrained-flip-12k-bf16-globalmax-up36]=30)
if [[ -n $NSTEPS ]]; then
  for run in "${!TEST_STEPS[@]}"; do TEST_STEPS[$run]=$NSTEPS; done
fi
# Test-time views chosen on the validation characters (session 22; README): these runs are also
# scored as <run>-<V>views, each image's features averaged over it and V - 1 affine copies.
declare -A VIEWS=([protonet-flip]=$NVIEWS [protonet-flip-bf16]=$NVIEWS [protonet-flip-w128]=$NVIEWS
                  [protonet-flip-5k]=$NVIEWS [protonet-flip-trainval]=$NVIEWS [protonet-flip-5k-trainval]=$NVIEWS [protonet-flip-5k-trainval-s1]=$NVIEWS [protonet-flip-5k-trainval-s2]=$NVIEWS
                  [protonet-flip-nopool]=$NVIEWS [protonet-flip-5k-trainval-nopool]=$NVIEWS
                  [protonet-flip-5k-trainval-distill]=$NVIEWS [protonet-flip-5k-trainval-distill-s1]=$NVIEWS
                  [reptile-zero-10shot-mb-3k-pretrained-flip-12k-bf16-globalmax-up36]=$NVIEWS)
# Transductive rounds chosen on the validation characters (session 26; README): these runs are also
# scored as <run>-refine<R> and <run>-<V>views-refine<R>, their class means refined with each
# episode's unlabelled queries by R rounds of soft k-means.
declare -A REFINE=([protonet-flip]=2 [protonet-flip-5k-trainval]=2 [protonet-flip-nopool]=2
                   [protonet-flip-5k-trainval-nopool]=2)
# Whitening chosen on the validation characters (session 42; README): these runs are also scored as
# <run>-<V>views-whiten<s>, their view-averaged features whitened by the within-class covariance of their
# own base characters, shrunk towards the identity by s times its mean variance.
declare -A WHITEN=([protonet-flip-bf16]=0.3 [protonet-flip-16k-trainval-bf16]=0.3
                   [protonet-flip-16k-trainval-bf16-s1]=0.3)
# Whitening pooled with each episode's support set (README): these runs are also scored as
# <run>-<V>views-whiten<s>-prior<n>, the base characters' covariance shrunk by s and worth n degrees of
# freedom against the support set's, for each <s>:<n> listed: 5:30, chosen on protonet-flip-bf16-alphabets'
# two held-out alphabets (session 43), and 3:30, chosen over all three alphabet splits (session 44).
CHOICES="5:30 3:30"
declare -A POOLED=([protonet-flip-bf16]=$CHOICES [protonet-flip-16k-trainval-bf16]=$CHOICES
                   [protonet-flip-16k-trainval-bf16-s1]=$CHOICES [protonet-flip-16k-trainval-bf16-120way]=$CHOICES
                   [protonet-flip-16k-trainval-bf16-120way-s1]=$CHOICES [protonet-flip-16k-trainval-bf16-globalmax]=$CHOICES
                   [protonet-flip-16k-trainval-bf16-globalmax-s1]=$CHOICES
                   [protonet-flip-16k-trainval-bf16-globalmax-within]=$CHOICES
                   [protonet-flip-16k-trainval-bf16-globalmax-within-s1]=$CHOICES)
pooled_candidate() {  # pooled_candidate <label> <spec> <"s:n ..." or nothing>: <label>-whiten<s>-prior<n> for each
  local choice
  for choice in $3; do
    candidates+=("$1-whiten${choice%:*}-prior${choice#*:}=$2@whiten=${choice%:*}@prior=${choice#*:}")
  done
}
# The checkpoint scored, where it is not the best on validation.
declare -A CHECKPOINT=([protonet-flip-trainval]=last.pt [protonet-flip-5k-trainval]=last.pt
                       [protonet-flip-5k-trainval-s1]=last.pt [protonet-flip-5k-trainval-s2]=last.pt
                       [protomaml-protonet-flip-5k-trainval]=last.pt [protonet-flip-5k-trainval-nopool]=last.pt
                       [maml-zero-protonet-flip-5k-trainval]=last.pt [maml-zero-protonet-flip-5k-trainval-init]=last.pt
                       [fomaml-zero-protonet-flip-5k-trainval]=last.pt
                       [fomaml-zero-protonet-flip-5k-trainval-4500]=last.pt
                       [metasgd-zero-protonet-flip-5k-trainval]=last.pt
                       [metasgd-fo-zero-protonet-flip-5k-trainval-4500]=last.pt
                       [reptile-zero-protonet-flip-5k-trainval]=last.pt
                       [reptile-zero-mb-protonet-flip-5k-trainval]=last.pt
                       [reptile-zero-1shot-protonet-flip-5k-trainval]=last.pt
                       [reptile-zero-10shot-mb-protonet-flip-5k-trainval]=last.pt
                       [reptile-zero-10shot-mb1-protonet-flip-5k-trainval]=last.pt
                       [reptile-zero-20way-mb-protonet-flip-5k-trainval]=last.pt
                       [reptile-zero-10shot-mb-4500-protonet-flip-5k-trainval]=last.pt
                       [reptile-zero-10shot-mb-protonet-flip-5k-trainval-s1]=last.pt
                       [reptile-zero-10shot-mb-4500-protonet-flip-5k-trainval-s1]=last.pt
                       [reptile-zero-10shot-mb-4500-protonet-flip-5k-trainval-s2]=last.pt
                       [metasgd-zero-rates1e-3-protonet-flip-5k-trainval]=last.pt
                       [metasgd-zero-rates1e-3-protonet-flip-5k-trainval-s1]=last.pt
                       [protomaml-protonet-flip-5k-trainval-init]=last.pt
                       [protonet-flip-5k-trainval-distill]=last.pt [protonet-flip-5k-trainval-distill-s1]=last.pt)
declare -A KIND=([protomaml-pretrained]=fomaml [protomaml-protonet]=fomaml [maml20-pretrained]=maml
                 [protonet-flip]=protonet [protonet-flip-bf16]=protonet [protonet-flip-elastic]=protonet [protonet5-flip]=protonet
                 [protomaml-protonet-flip]=fomaml [protonet-flip-w128]=protonet
                 [protomaml2-protonet-flip]=maml [maml-pretrained-flip]=maml [protonet-flip-5k]=protonet
                 [protonet-flip-trainval]=protonet [protonet-flip-5k-trainval]=protonet
                 [protonet-flip-5k-trainval-s1]=protonet [protonet-flip-5k-trainval-s2]=protonet
                 [protomaml-protonet-flip-5k-trainval]=fomaml [maml-protonet-flip]=maml
                 [protoreptile-protonet-flip]=reptile [protonet-flip-nopool]=protonet
                 [protonet-flip-5k-trainval-nopool]=protonet [maml-zero-protonet-flip-5k-trainval]=maml
                 [maml-zero-pretrained-flip]=maml [maml-zero-protonet-flip-5k-trainval-init]=maml
                 [fomaml-zero-protonet-flip-5k-trainval]=fomaml
                 [fomaml-zero-protonet-flip-5k-trainval-4500]=fomaml [maml-zero-pretrained-flip-init]=maml
                 [metasgd-zero-protonet-flip-5k-trainval]=metasgd
                 [metasgd-fo-zero-protonet-flip-5k-trainval-4500]=metasgd
                 [reptile-zero-protonet-flip-5k-trainval]=reptile
                 [reptile-zero-mb-protonet-flip-5k-trainval]=reptile
                 [reptile-zero-1shot-protonet-flip-5k-trainval]=reptile
                 [reptile-zero-10shot-mb-protonet-flip-5k-trainval]=reptile
                 [reptile-zero-10shot-mb1-protonet-flip-5k-trainval]=reptile
                 [reptile-zero-20way-mb-protonet-flip-5k-trainval]=reptile
                 [reptile-zero-10shot-mb-4500-protonet-flip-5k-trainval]=reptile
                 [reptile-zero-10shot-mb-protonet-flip-5k-trainval-s1]=reptile
                 [reptile-zero-10shot-mb-4500-protonet-flip-5k-trainval-s1]=reptile
                 [reptile-zero-10shot-mb-4500-protonet-flip-5k-trainval-s2]=reptile
                 [reptile-zero-10shot-mb-4500-pretrained-flip]=reptile
                 [reptile-zero-10shot-mb-4500-pretrained-flip-s1]=reptile
                 [metasgd-zero-rates1e-3-protonet-flip-5k-trainval]=metasgd
                 [metasgd-zero-pretrained-flip]=metasgd [reptile-zero-10shot-mb-4500-pretrained-flip-s2]=reptile
                 [metasgd-zero-pretrained-flip-s1]=metasgd [metasgd-zero-rates1e-3-pretrained-flip]=metasgd
                 [protomaml-protonet-flip-5k-trainval-init]=fomaml [maml-zero-pretrained-flip-s1]=maml
                 [metasgd-zero-rates1e-3-pretrained-flip-s1]=metasgd
                 [reptile-zero-10shot-mb-4500-pretrained-flip-lr0.05]=reptile
                 [reptile-zero-10shot-mb-4500-pretrained-flip-lr0.2]=reptile
                 [reptile-zero-10shot-mb-4500-pretrained-flip-lr0.05-s1]=reptile [maml-zero-pretrained-flip-s2]=maml
                 [metasgd-zero-rates1e-3-protonet-flip-5k-trainval-s1]=metasgd
                 [metasgd-zero-min0-pretrained-flip]=metasgd [metasgd-zero-10steps-pretrained-flip]=metasgd
                 [metasgd-zero-min0-pretrained-flip-s1]=metasgd [protonet-flip-5k-trainval-distill]=protonet
                 [protonet-flip-5k-trainval-distill-s1]=protonet
                 [reptile-zero-10shot-mb-4500-pretrained-flip-lr0.2-s1]=reptile
                 [reptile-zero-10shot-mb-3k-pretrained-flip-12k-bf16-globalmax-up36]=reptile
                 [reptile-zero-10shot-mb-3k-lr0.02-pretrained-flip-12k-bf16-globalmax-up36]=reptile
                 [reptile-zero-10shot-mb-lr0.02-pretrained-flip-12k-bf16-globalmax-up36-init]=reptile
                 [fomaml-zero-5shot-lr0.02-pretrained-flip-12k-bf16-globalmax-up36]=fomaml
                 [fomaml-zero-5shot-30steps-lr0.02-pretrained-flip-12k-bf16-globalmax-up36]=fomaml
                 [reptile-zero-10shot-mb-3k-lr0.02-sgd1-pretrained-flip-12k-bf16-globalmax-up36]=reptile
                 [reptile-zero-5shot-30steps-sgd1-pretrained-flip-12k-bf16-globalmax-up36]=reptile
                 [reptile-zero-10shot-mb-30steps-sgd1-pretrained-flip-12k-bf16-globalmax-up36]=reptile)  # the learner of runs not named after theirs
# The ProtoNet runs of sessions 37 to 41, 45 and 46 whose last.pt is scored, as trained and with 16 views: each
# is named once here (and in its train line), and they close the list of runs below.
LAST_PROTONETS=(protonet-flip-5k-trainval-distill-x2 protonet-flip-10k-trainval protonet-flip-10k-trainval-s1
                protonet-flip-16k-trainval protonet-flip-5k-trainval-bf16 protonet-flip-28k-trainval-bf16
                protonet-flip-28k-trainval-bf16-s1 protonet-flip-16k-trainval-bf16-120way
                protonet-flip-16k-trainval-bf16-120way-s1 protonet-flip-16k-trainval-bf16-11query
                protonet-flip-16k-trainval-bf16 protonet-flip-16k-trainval-bf16-s1
                protonet-flip-16k-trainval-bf16-globalmax protonet-flip-16k-trainval-bf16-globalmax-s1
                protonet-flip-16k-trainval-bf16-globalmax-within protonet-flip-16k-trainval-bf16-globalmax-within-s1)
for run in "${LAST_PROTONETS[@]}"; do
  VIEWS[$run]=$NVIEWS CHECKPOINT[$run]=last.pt KIND[$run]=protonet
done
# Session 47's Proto-MAML starts from the conv4-globalmax networks, also scored with views through the adapting backbone,
# with BatchNorm on each batch's statistics (as the other MAML runs), on the running ones (-running) and, since
# session 48, on each support set's (-support).
PROTOMAML_GLOBALMAX=()
declare -A OTHER_NORMS=()  # these runs are also scored with each BatchNorm listed (@inner.test_norm=<norm>, -<norm>)
# Session 48: these runs are also scored with views, session 44's whitening (3:30) and R rounds of transductive
# refinement (chosen on held-out alphabets: README), as <run>-<V>views-whiten3-prior30-refine<R>.
declare -A WHITEN_REFINE=()
# Session 49: these runs are also scored with views, that whitening and the earlier blocks' pooled outputs beside
# the features, each whitened on its own, at the weights chosen on held-out alphabets (README), as
# <run>-<V>views-whiten3-prior30-blocks.
declare -A BLOCKS=()
for start in protonet-flip-16k-trainval-bf16-globalmax{,-s1,-within,-within-s1}; do
  run=protomaml-$start-init
  PROTOMAML_GLOBALMAX+=("$run")
  VIEWS[$run]=$NVIEWS CHECKPOINT[$run]=last.pt KIND[$run]=fomaml OTHER_NORMS[$run]="running support"
  WHITEN_REFINE[$start]=5
  BLOCKS[$start]=@block3=0.5@block2=0.25@block1=0.25
done
candidates=()
for run in maml maml-pretrained maml20-pretrained fomaml fomaml-pretrained protomaml-pretrained protomaml-protonet \
           reptile reptile-pretrained protonet protonet-pretrained protonet-flip protomaml-protonet-flip \
           maml-pretrained-flip protonet-flip-elastic protonet5-flip protonet-flip-w128 protomaml2-protonet-flip \
           protonet-flip-5k protonet-flip-trainval protonet-flip-5k-trainval protonet-flip-5k-trainval-s1 \
           protonet-flip-5k-trainval-s2 protomaml-protonet-flip-5k-trainval \
           maml-protonet-flip protoreptile-protonet-flip protonet-flip-nopool protonet-flip-5k-trainval-nopool \
           maml-zero-protonet-flip-5k-trainval maml-zero-pretrained-flip maml-zero-protonet-flip-5k-trainval-init \
           fomaml-zero-protonet-flip-5k-trainval fomaml-zero-protonet-flip-5k-trainval-4500 maml-zero-pretrained-flip-init \
           metasgd-zero-protonet-flip-5k-trainval metasgd-fo-zero-protonet-flip-5k-trainval-4500 \
           reptile-zero-protonet-flip-5k-trainval reptile-zero-mb-protonet-flip-5k-trainval \
           reptile-zero-1shot-protonet-flip-5k-trainval reptile-zero-10shot-mb-protonet-flip-5k-trainval \
           reptile-zero-10shot-mb1-protonet-flip-5k-trainval reptile-zero-20way-mb-protonet-flip-5k-trainval \
           reptile-zero-10shot-mb-4500-protonet-flip-5k-trainval reptile-zero-10shot-mb-protonet-flip-5k-trainval-s1 \
           reptile-zero-10shot-mb-4500-protonet-flip-5k-trainval-s1 \
           reptile-zero-10shot-mb-4500-protonet-flip-5k-trainval-s2 reptile-zero-10shot-mb-4500-pretrained-flip \
           reptile-zero-10shot-mb-4500-pretrained-flip-s1 \
           metasgd-zero-rates1e-3-protonet-flip-5k-trainval metasgd-zero-pretrained-flip \
           reptile-zero-10shot-mb-4500-pretrained-flip-s2 metasgd-zero-pretrained-flip-s1 \
           metasgd-zero-rates1e-3-pretrained-flip protomaml-protonet-flip-5k-trainval-init \
           maml-zero-pretrained-flip-s1 metasgd-zero-rates1e-3-pretrained-flip-s1 \
           reptile-zero-10shot-mb-4500-pretrained-flip-lr0.05 reptile-zero-10shot-mb-4500-pretrained-flip-lr0.2 \
           reptile-zero-10shot-mb-4500-pretrained-flip-lr0.05-s1 maml-zero-pretrained-flip-s2 \
           metasgd-zero-rates1e-3-protonet-flip-5k-trainval-s1 metasgd-zero-min0-pretrained-flip \
           metasgd-zero-10steps-pretrained-flip metasgd-zero-min0-pretrained-flip-s1 \
           protonet-flip-5k-trainval-distill protonet-flip-5k-trainval-distill-s1 \
           reptile-zero-10shot-mb-4500-pretrained-flip-lr0.2-s1 "${LAST_PROTONETS[@]}" protonet-flip-bf16 \
           "${PROTOMAML_GLOBALMAX[@]}" reptile-zero-10shot-mb-3k-pretrained-flip-12k-bf16-globalmax-up36 \
           reptile-zero-10shot-mb-3k-lr0.02-pretrained-flip-12k-bf16-globalmax-up36 \
           reptile-zero-10shot-mb-lr0.02-pretrained-flip-12k-bf16-globalmax-up36-init \
           fomaml-zero-5shot-lr0.02-pretrained-flip-12k-bf16-globalmax-up36 \
           fomaml-zero-5shot-30steps-lr0.02-pretrained-flip-12k-bf16-globalmax-up36 \
           reptile-zero-10shot-mb-3k-lr0.02-sgd1-pretrained-flip-12k-bf16-globalmax-up36 \
           reptile-zero-5shot-30steps-sgd1-pretrained-flip-12k-bf16-globalmax-up36 \
           reptile-zero-10shot-mb-30steps-sgd1-pretrained-flip-12k-bf16-globalmax-up36; do
  checkpoint=${CHECKPOINT[$run]:-best.pt}
  [[ -f "$OUT/$run/$checkpoint" ]] || continue
  kind=${KIND[$run]:-${run%-pretrained}}
  source="$OUT/$run"
  [[ $checkpoint == best.pt ]] || source+="/$checkpoint"
  candidates+=("$run=$kind:$source")
  steps=${TEST_STEPS[$run]:-}
  [[ -n $steps ]] && candidates+=("$run-${steps}steps=$kind:$source@inner.test_steps=$steps")
  views=${VIEWS[$run]:-}
  [[ -n $views ]] && candidates+=("$run-${views}views=$kind:$source@views=$views")
  refine=${REFINE[$run]:-}
  [[ -n $refine ]] && candidates+=("$run-refine$refine=$kind:$source@refine=$refine")
  [[ -n $refine && -n $views ]] && candidates+=("$run-${views}views-refine$refine=$kind:$source@views=$views@refine=$refine")
  whiten=${WHITEN[$run]:-}
  [[ -n $whiten ]] && candidates+=("$run-${views}views-whiten$whiten=$kind:$source@views=$views@whiten=$whiten")
  pooled_candidate "$run-${views}views" "$kind:$source@views=$views" "${POOLED[$run]:-}"
  refine=${WHITEN_REFINE[$run]:-}
  [[ -n $refine ]] && candidates+=("$run-${views}views-whiten3-prior30-refine$refine=$kind:$source@views=$views@whiten=3@prior=30@refine=$refine")
  blocks=${BLOCKS[$run]:-}
  [[ -n $blocks ]] && candidates+=("$run-${views}views-whiten3-prior30-blocks=$kind:$source@views=$views@whiten=3@prior=30$blocks")
  # Proto-MAML's starts, also with BatchNorm on other statistics: each query classified on its own
  for norm in ${OTHER_NORMS[$run]:-}; do
    candidates+=("$run-${views}views-$norm=$kind:$source@views=$views@inner.test_norm=$norm")
  done
done
# Two and three seeds of protonet-flip-5k-trainval as one ProtoNet (session 27): each image's
# features from every network side by side, so the logits are the sum of the runs' own; with the
# views and refinement rounds chosen for one run.
members=()
for seed in "" -s1 -s2; do
  [[ -f "$OUT/protonet-flip-5k-trainval$seed/last.pt" ]] && members+=("$OUT/protonet-flip-5k-trainval$seed/last.pt")
done
for n in 2 3; do
  [[ ${#members[@]} -ge $n ]] || continue
  runs=$(IFS=+; echo "${members[*]:0:$n}")
  candidates+=("protonet-flip-5k-trainval-x$n=protonet:$runs"
               "protonet-flip-5k-trainval-x$n-${NVIEWS}views=protonet:$runs@views=$NVIEWS"
               "protonet-flip-5k-trainval-x$n-${NVIEWS}views-refine2=protonet:$runs@views=$NVIEWS@refine=2")
done
# seed_pair <run>: <run> and <run>-s1 as one (<run>-x2), once both exist: with and without views, and with
# views and POOLED[<run>]'s whitening where it has one, and refined as WHITEN_REFINE[<run>] says (session 48).
seed_pair() {
  local a="$OUT/$1/last.pt" b="$OUT/$1-s1/last.pt"
  [[ -f $a && -f $b ]] || return 0
  candidates+=("$1-x2=protonet:$a+$b" "$1-x2-${NVIEWS}views=protonet:$a+$b@views=$NVIEWS")
  pooled_candidate "$1-x2-${NVIEWS}views" "protonet:$a+$b@views=$NVIEWS" "${POOLED[$1]:-}"
  local refine=${WHITEN_REFINE[$1]:-}
  [[ -n $refine ]] && candidates+=("$1-x2-${NVIEWS}views-whiten3-prior30-refine$refine=protonet:$a+$b@views=$NVIEWS@whiten=3@prior=30@refine=$refine")
  return 0
}
# The two seeds as one of the 10,000-step runs (session 38), the 28,000-step bf16 runs (session 39), the
# 120-way runs (session 40), the 60-way 16,000-step bf16 runs (session 41) and those with conv4-globalmax
# (session 45), also with episodes from one alphabet (session 46).
seed_pair protonet-flip-10k-trainval
seed_pair protonet-flip-28k-trainval-bf16
seed_pair protonet-flip-16k-trainval-bf16-120way
seed_pair protonet-flip-16k-trainval-bf16
seed_pair protonet-flip-16k-trainval-bf16-globalmax
seed_pair protonet-flip-16k-trainval-bf16-globalmax-within
if [[ -f "$OUT/pretrain/best.pt" ]]; then
  # full fine-tuning at the default backbone lr (0.001) and at the one chosen on the validation
  # characters (0.0001, 20-way 5-shot; README), where no episode collapses to chance
  candidates+=("linear-probe=finetune:$OUT/pretrain" "last-block=finetune-freeze3:$OUT/pretrain"
               "full-finetune=finetune-full:$OUT/pretrain"
               "full-finetune-lr0.0001=finetune-full:$OUT/pretrain@finetune.backbone_lr=0.0001"
               "simpleshot=simpleshot:$OUT/pretrain")
fi
if [[ -f "$OUT/pretrain-flip/best.pt" ]]; then
  candidates+=("linear-probe-flip=finetune:$OUT/pretrain-flip" "simpleshot-flip=simpleshot:$OUT/pretrain-flip"
               "linear-probe-flip-${NVIEWS}views=finetune:$OUT/pretrain-flip@views=$NVIEWS"
               "simpleshot-flip-${NVIEWS}views=simpleshot:$OUT/pretrain-flip@views=$NVIEWS")
fi
run=pretrain-flip-12k-bf16-globalmax-up36  # session 55
if [[ -f "$OUT/$run/best.pt" ]]; then
  candidates+=("simpleshot-${run#pretrain-}=simpleshot:$OUT/$run"
               "simpleshot-${run#pretrain-}-${NVIEWS}views=simpleshot:$OUT/$run@views=$NVIEWS")
fi
if [[ -f "$OUT/pretrain-flip-cos/best.pt" ]]; then
  candidates+=("linear-probe-flip-cos=finetune:$OUT/pretrain-flip-cos" "simpleshot-flip-cos=simpleshot:$OUT/pretrain-flip-cos")
fi
candidates+=("scratch=scratch")
methods=()
for spec in "${candidates[@]}"; do
  chosen "${spec%%=*}" && methods+=("$spec")
done
if [[ -f "$OUT/eval/config.yaml" && ! -f "$OUT/eval/scores.pt" ]]; then  # killed part-way: go on
  if [[ ${#METHODS[@]} -gt 0 || ${#REUSE[@]} -gt 0 ]]; then
    echo "error: $OUT/eval is an unfinished evaluation; run without --methods and --reuse to resume it," \
         "or remove it to start another" >&2
    exit 2
  fi
  echo "resuming the unfinished evaluation $OUT/eval from the chunks of episodes it saved"
  timed "evaluate (resumed)" python -m fewshot.evaluate "resume=$OUT/eval" quiet=true
else
  if [[ -d "$OUT/eval" ]]; then
    rm -rf "$OUT/eval.prev"
    mv "$OUT/eval" "$OUT/eval.prev"
  fi
  list=$(IFS=,; echo "${methods[*]}")
  reuse=$(IFS=,; echo "${REUSE[*]}")
  timed evaluate python -m fewshot.evaluate --config "$EXP/evaluate.yaml" \
    "data.root=$DATA/images_background_small2.zip" "data.split.manifest=$OUT/small2_novel.json" \
    "methods=[$list]" "reuse=[$reuse]" "out_dir=$OUT" quiet=true "${EVAL_EXTRA[@]}"
fi
if [[ $QUICK == 0 ]]; then
  mkdir -p "$EXP/results"
  cp "$OUT/eval/report.md" "$OUT/eval/report.json" "$OUT/eval/accuracy.png" "$OUT/timings.tsv" "$EXP/results/"
  gzip -9 -c "$OUT/eval/results.csv" > "$EXP/results/results.csv.gz"  # per-episode rows, kept small
  cp "$OUT/small1_split.json" "$OUT/small1_trainval.json" "$OUT/small1_alphabets.json" \
    "$OUT/small1_alphabets2.json" "$OUT/small1_alphabets3.json" "$OUT/small2_novel.json" "$EXP/"
fi
echo "study done: $OUT/eval/report.md"
