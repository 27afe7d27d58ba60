// Softmax cross-entropy over logits [batch, classes] with integer labels.
//
// softmax_xent_forward: one workgroup; adds the batch's summed loss, its number of correct
//   predictions (argmax == label, first maximum on ties) and its size to metrics[0..3],
//   and writes the batch's mean loss to metrics[3]. Metrics therefore accumulate on the GPU
//   over many steps; the host zeroes them when it reads them.
// softmax_xent_backward: overwrites dlogits with (softmax - target) * grad_scale, where
//   grad_scale is 1/batch for the mean loss.
// softmax_xent_train: both in one dispatch (what a training step runs): the forward's
//   workgroup also writes each row's gradient from the row statistics it computed, with the
//   same arithmetic and summation order as the two kernels above (bit-identical results).
// Both also keep the step counter (kernels::optim's layout), the one thing a step's only
// single-workgroup dispatch can do without racing the counter's readers: p.counter_duty 1
// copies counter[0] to counter[2] for the training step's update (which ends the step),
// 2 adds one to counter[0] (ends an evaluation step, whose later dispatches do not read it).
// With label smoothing e (torch's CrossEntropyLoss(label_smoothing=e)) the target is
// (1 - e) * onehot + e / classes, and the loss -sum_j target_j * log softmax_j.

struct Params {
    batch: u32,
    classes: u32,
    smoothing: f32,
    grad_scale: f32,
    counter_duty: u32,
    // softmax_xent_train_input_grad: the classifier's inputs, and dx = 0 where its input
    // x <= mask_below (0 when a ReLU produced x: the ReLU's backward; -inf otherwise).
    inputs: u32,
    mask_below: f32,
    _pad: u32,
}

const WG: u32 = 64u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read> labels: array<u32>;
@group(0) @binding(3) var<storage, read_write> metrics: array<f32>;
@group(0) @binding(4) var<storage, read_write> dlogits: array<f32>;
@group(0) @binding(6) var<storage, read_write> counter_rw: array<u32>;

var<workgroup> red_loss: array<f32, WG>;
var<workgroup> red_correct: array<u32, WG>;

struct Row {
    max_logit: f32,
    argmax: u32,
    log_sum: f32,
    // Sum of the row's logits (for the smoothed target's uniform part).
    sum: f32,
}

fn row_stats(r: u32) -> Row {
    let base = r * p.classes;
    var m = logits[base];
    var am = 0u;
    for (var j = 1u; j < p.classes; j++) {
        let v = logits[base + j];
        if (v > m) {
            m = v;
            am = j;
        }
    }
    var s = 0.0;
    var total = 0.0;
    for (var j = 0u; j < p.classes; j++) {
        let v = logits[base + j];
        s += exp(v - m);
        total += v;
    }
    return Row(m, am, log(s), total);
}

// Row r's loss from its statistics.
fn row_loss(r: u32, st: Row, label: u32) -> f32 {
    let goal = (1.0 - p.smoothing) * logits[r * p.classes + label]
        + p.smoothing / f32(p.classes) * st.sum;
    return st.max_logit + st.log_sum - goal;
}

// Row r's gradient into dlogits.
fn row_gradient(r: u32, st: Row, label: u32) {
    let base = r * p.classes;
    for (var j = 0u; j < p.classes; j++) {
        let prob = exp(logits[base + j] - st.max_logit - st.log_sum);
        let goal = select(0.0, 1.0 - p.smoothing, j == label) + p.smoothing / f32(p.classes);
        dlogits[base + j] = (prob - goal) * p.grad_scale;
    }
}

@compute @workgroup_size(WG)
fn softmax_xent_forward(@builtin(local_invocation_id) lid: vec3<u32>) {
    var loss = 0.0;
    var correct = 0u;
    for (var r = lid.x; r < p.batch; r += WG) {
        let st = row_stats(r);
        let label = min(labels[r], p.classes - 1u);
        loss += row_loss(r, st, label);
        correct += select(0u, 1u, st.argmax == label);
    }
    reduce_into_metrics(lid.x, loss, correct);
}

@compute @workgroup_size(WG)
fn softmax_xent_train(@builtin(local_invocation_id) lid: vec3<u32>) {
    var loss = 0.0;
    var correct = 0u;
    for (var r = lid.x; r < p.batch; r += WG) {
        let st = row_stats(r);
        let label = min(labels[r], p.classes - 1u);
        loss += row_loss(r, st, label);
        correct += select(0u, 1u, st.argmax == label);
        row_gradient(r, st, label);
    }
    reduce_into_metrics(lid.x, loss, correct);
}

// softmax_xent_train, plus the gradient to the input of the linear layer that produced the
// logits (the classifier): dx = dlogits W, a product whose K is the number of classes, so
// that it needs no dispatch of its own. Workgroup g owns ROWS rows of the batch: their
// gradients, then their rows of dx (after a storage barrier, the dlogits its lanes wrote);
// workgroup 0 also computes the metrics over the whole batch and keeps the counter, exactly
// as softmax_xent_train does (same lanes, same order: bit-identical metrics and dlogits).
@group(0) @binding(7) var<storage, read> w: array<f32>;
@group(0) @binding(8) var<storage, read> x: array<f32>;
@group(0) @binding(9) var<storage, read_write> dx: array<f32>;

// Rows per workgroup: one vec4 of accumulators per input column.
const ROWS: u32 = 4u;

@compute @workgroup_size(WG)
fn softmax_xent_train_input_grad(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let first = wid.x * ROWS;
    let end = min(first + ROWS, p.batch);
    for (var r = first + lid.x; r < end; r += WG) {
        row_gradient(r, row_stats(r), min(labels[r], p.classes - 1u));
    }
    if (wid.x == 0u) {
        var loss = 0.0;
        var correct = 0u;
        for (var r = lid.x; r < p.batch; r += WG) {
            let st = row_stats(r);
            let label = min(labels[r], p.classes - 1u);
            loss += row_loss(r, st, label);
            correct += select(0u, 1u, st.argmax == label);
        }
        reduce_into_metrics(lid.x, loss, correct);
    }
    storageBarrier();
    // Lanes along the inputs, each weight read once for the workgroup's rows.
    let rows = end - first;
    for (var i = lid.x; i < p.inputs; i += WG) {
        var g = vec4<f32>();
        for (var j = 0u; j < p.classes; j++) {
            let wj = w[j * p.inputs + i];
            let d = first * p.classes + j;
            let c = p.batch * p.classes - 1u;
            g += wj * vec4<f32>(dlogits[d], dlogits[min(d + p.classes, c)], dlogits[min(d + 2u * p.classes, c)], dlogits[min(d + 3u * p.classes, c)]);
        }
        for (var r = 0u; r < rows; r++) {
            let e = (first + r) * p.inputs + i;
            dx[e] = select(g[r], 0.0, x[e] <= p.mask_below);
        }
    }
}

// The workgroup's sum of `loss` and `correct` in a fixed tree order, added to metrics.
fn reduce_into_metrics(lane: u32, loss: f32, correct: u32) {
    red_loss[lane] = loss;
    red_correct[lane] = correct;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
        if (lane < stride) {
            red_loss[lane] += red_loss[lane + stride];
            red_correct[lane] += red_correct[lane + stride];
        }
        workgroupBarrier();
    }
    if (lane == 0u) {
        metrics[0] += red_loss[0];
        metrics[1] += f32(red_correct[0]);
        metrics[2] += f32(p.batch);
        metrics[3] = red_loss[0] / f32(p.batch);
        if (p.counter_duty == 1u) {
            counter_rw[2] = counter_rw[0];
        } else if (p.counter_duty == 2u) {
            counter_rw[0] += 1u;
        }
    }
}

@compute @workgroup_size(WG)
fn softmax_xent_backward(@builtin(global_invocation_id) gid: vec3<u32>) {
    let r = gid.x;
    if (r >= p.batch) { return; }
    let st = row_stats(r);
    row_gradient(r, st, min(labels[r], p.classes - 1u));
}

// confusion[label * classes + prediction] += 1 for every row (prediction = first argmax).
// Integer atomics: the counts do not depend on the order rows are processed in.
@group(0) @binding(5) var<storage, read_write> confusion: array<atomic<u32>>;

@compute @workgroup_size(WG)
fn confusion_accumulate(@builtin(global_invocation_id) gid: vec3<u32>) {
    let r = gid.x;
    if (r >= p.batch) { return; }
    let st = row_stats(r);
    let label = min(labels[r], p.classes - 1u);
    atomicAdd(&confusion[label * p.classes + st.argmax], 1u);
}
