//! What a run's report shows about the test set, computed once when training ends (from
//! the class probabilities of every test image) and kept in the run folder as `test.json`,
//! so that `wgpu-fmnist report` can redraw the page without a GPU or the data.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ClassStats {
    pub class: String,
    pub support: usize,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
}

/// A wrong prediction and how sure the model was of it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Mistake {
    /// Index in the test set.
    pub index: usize,
    pub label: usize,
    pub predicted: usize,
    pub probability: f64,
    /// The 28x28 image, so the page can show it without the data.
    pub pixels: Vec<u8>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TestReport {
    pub count: usize,
    pub accuracy: f64,
    pub loss: f64,
    pub classes: Vec<String>,
    pub per_class: Vec<ClassStats>,
    /// `confusion[label][prediction]`
    pub confusion: Vec<Vec<usize>>,
    /// The most confident mistakes, most confident first.
    pub mistakes: Vec<Mistake>,
}

impl TestReport {
    /// From each test image's class probabilities, its label and its pixels (784 each).
    pub fn new(
        probabilities: &[Vec<f32>],
        labels: &[u8],
        pixels: &[u8],
        classes: &[String],
        keep_mistakes: usize,
    ) -> TestReport {
        let k = classes.len();
        let mut confusion = vec![vec![0usize; k]; k];
        let mut loss = 0.0;
        let mut mistakes = Vec::new();
        for (i, (p, &label)) in probabilities.iter().zip(labels).enumerate() {
            let label = label as usize;
            let predicted = p
                .iter()
                .enumerate()
                .fold(0, |best, (j, &v)| if v > p[best] { j } else { best });
            if label < k && predicted < k {
                confusion[label][predicted] += 1;
            }
            loss -= (p.get(label).copied().unwrap_or(0.0) as f64)
                .max(1e-12)
                .ln();
            if predicted != label {
                mistakes.push(Mistake {
                    index: i,
                    label,
                    predicted,
                    probability: p[predicted] as f64,
                    pixels: pixels.get(i * 784..(i + 1) * 784).unwrap_or(&[]).to_vec(),
                });
            }
        }
        mistakes.sort_by(|a, b| {
            b.probability
                .total_cmp(&a.probability)
                .then(a.index.cmp(&b.index))
        });
        mistakes.truncate(keep_mistakes);
        let count = probabilities.len().min(labels.len());
        let correct: usize = (0..k).map(|c| confusion[c][c]).sum();
        let per_class = (0..k)
            .map(|c| {
                let support: usize = confusion[c].iter().sum();
                let predicted: usize = (0..k).map(|r| confusion[r][c]).sum();
                let hit = confusion[c][c] as f64;
                let precision = if predicted > 0 {
                    hit / predicted as f64
                } else {
                    0.0
                };
                let recall = if support > 0 {
                    hit / support as f64
                } else {
                    0.0
                };
                let f1 = if precision + recall > 0.0 {
                    2.0 * precision * recall / (precision + recall)
                } else {
                    0.0
                };
                ClassStats {
                    class: classes[c].clone(),
                    support,
                    precision,
                    recall,
                    f1,
                }
            })
            .collect();
        TestReport {
            count,
            accuracy: correct as f64 / count.max(1) as f64,
            loss: loss / count.max(1) as f64,
            classes: classes.to_vec(),
            per_class,
            confusion,
            mistakes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confusion_metrics_and_mistakes_follow_the_probabilities() {
        let classes: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let probs = vec![
            vec![0.8, 0.1, 0.1],   // a -> a
            vec![0.1, 0.7, 0.2],   // a -> b (0.7)
            vec![0.2, 0.5, 0.3],   // b -> b
            vec![0.05, 0.05, 0.9], // b -> c (0.9)
        ];
        let labels = [0u8, 0, 1, 1];
        let pixels: Vec<u8> = (0..4).flat_map(|i| vec![i as u8; 784]).collect();
        let r = TestReport::new(&probs, &labels, &pixels, &classes, 5);
        assert_eq!(
            r.confusion,
            vec![vec![1, 1, 0], vec![0, 1, 1], vec![0, 0, 0]]
        );
        assert_eq!(r.accuracy, 0.5);
        let want_loss = -(0.8f64.ln() + 0.1f64.ln() + 0.5f64.ln() + 0.05f64.ln()) / 4.0;
        assert!(
            (r.loss - want_loss).abs() < 1e-6,
            "{} vs {want_loss}",
            r.loss
        );
        assert_eq!(r.per_class[1].precision, 0.5);
        assert_eq!(r.per_class[1].recall, 0.5);
        assert_eq!(r.per_class[2].support, 0);
        assert_eq!(
            r.mistakes.iter().map(|m| m.index).collect::<Vec<_>>(),
            vec![3, 1]
        );
        assert_eq!(r.mistakes[0].pixels, vec![3u8; 784]);
    }
}
