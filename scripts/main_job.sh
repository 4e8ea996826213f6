#!/usr/bin/env bash
# The main job on Fashion-MNIST: train a teacher on the private data, convert it with DPDFD at
# EPSILON (default 10, delta 1e-5) without touching the data again, then print the teacher's and
# the student's test accuracy and the privacy report. About 6 minutes on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${RUNS:-runs}
epsilon=${EPSILON:-10}
python=.venv/bin/python

"$python" -m dpdfd_tf.train_teacher --flagfile=flags/fashion_mnist.cfg \
    --output_dir="$runs/teacher" --overwrite
"$python" -m dpdfd_tf.distill --flagfile=flags/fashion_mnist.cfg --teacher="$runs/teacher/model" \
    --epsilon="$epsilon" --output_dir="$runs/dpdfd" --overwrite
teacher_result=$("$python" -m dpdfd_tf.evaluate --dataset=fashion_mnist --model="$runs/teacher/model")
student_result=$("$python" -m dpdfd_tf.evaluate --dataset=fashion_mnist --model="$runs/dpdfd/student")
echo "== results"
echo "teacher: $teacher_result"
echo "student: $student_result"
echo "privacy report ($runs/dpdfd/privacy_report.json):"
cat "$runs/dpdfd/privacy_report.json"
