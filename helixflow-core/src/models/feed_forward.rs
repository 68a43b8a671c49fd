//! A block's feed-forward network: one gated MLP, or a mixture of experts that routes each
//! token to its top `k` gated MLPs.
//!
//! The routing is llama.cpp's (`build_moe_ffn` with softmax gating): the router's logits
//! through ggml's softmax, the `k` most probable experts in descending order, their
//! probabilities renormalised to sum to one where the model asks for it, and the experts'
//! outputs weighted and added in that order. Each expert runs once per step over all the
//! tokens routed to it, as one product over those rows.

use crate::cpu::math::{self, softmax_numerators_in};
use crate::cpu::{GatedProjection, StepOrder, WeightMatrix};
use crate::error::Result;
use crate::models::router::Router;
use crate::models::GgmlBuild;

/// How a mixture of experts routes its tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ExpertRouting {
    /// Experts in each block.
    pub count: usize,
    /// Experts each token goes to (`k`).
    pub used: usize,
    /// Width of each expert's MLP.
    pub feed_forward_length: usize,
    /// Whether the chosen experts' probabilities are renormalised to sum to one.
    pub normalize_weights: bool,
    /// A factor on the chosen experts' weights (`expert_weights_scale`), if not 1.
    pub weights_scale: Option<f32>,
}

/// One gated MLP: `down · (act(gate · x) * (up · x))`.
#[derive(Debug)]
pub struct GatedMlp {
    /// The gate and up projections and the activation between them.
    pub gate_up: GatedProjection,
    /// The down projection.
    pub down: WeightMatrix,
}

impl GatedMlp {
    /// `out = mlp(input)` for `n` rows, with `hidden` (n × the MLP's width) as scratch.
    fn forward(
        &self,
        order: StepOrder<'_>,
        input: &[f32],
        hidden: &mut Vec<f32>,
        out: &mut [f32],
    ) -> Result<()> {
        let n = input.len() / self.gate_up.cols().max(1);
        hidden.resize(n * self.gate_up.rows(), 0.0);
        self.gate_up.forward_in(order, input, hidden)?;
        self.down.matmul_in(order, hidden, out)
    }

    fn set_build(&mut self, build: GgmlBuild) {
        let activation = self.gate_up.activation().in_build(build);
        self.gate_up.set_activation(activation);
    }
}

/// A block's feed-forward network.
#[derive(Debug)]
pub enum FeedForward {
    /// One MLP for every token.
    Dense(GatedMlp),
    /// A router and its experts.
    Experts {
        /// `[count, hidden]`: one logit per expert.
        router: Router,
        /// The experts.
        experts: Vec<GatedMlp>,
        /// How tokens are routed.
        routing: ExpertRouting,
    },
}

impl FeedForward {
    /// `out = ffn(input)` for rows of the model's width (`out` is as long as `input`);
    /// `hidden` is scratch. `build` says whose softmax the router uses.
    pub fn forward(
        &self,
        order: StepOrder<'_>,
        build: GgmlBuild,
        input: &[f32],
        hidden: &mut Vec<f32>,
        out: &mut [f32],
    ) -> Result<()> {
        match self {
            Self::Dense(mlp) => mlp.forward(order, input, hidden, out),
            Self::Experts {
                router,
                experts,
                routing,
            } => {
                let width = router.cols();
                let n = input.len() / width;
                let mut logits = vec![0f32; n * routing.count];
                router.logits(order, build, input, &mut logits)?;
                let choices: Vec<Vec<(usize, f32)>> = logits
                    .chunks_exact_mut(routing.count)
                    .map(|row| route(row, routing, build))
                    .collect();
                // Each expert's tokens as one batch of rows.
                let mut outputs = vec![0f32; n * routing.used * width];
                let (mut rows, mut routed, mut places) = (Vec::new(), Vec::new(), Vec::new());
                let (mut results, mut tiled) = (Vec::new(), Vec::new());
                for (e, expert) in experts.iter().enumerate() {
                    rows.clear();
                    routed.clear();
                    places.clear();
                    for (t, chosen) in choices.iter().enumerate() {
                        if let Some(slot) = chosen.iter().position(|&(c, _)| c == e) {
                            rows.extend_from_slice(&input[t * width..(t + 1) * width]);
                            routed.push(t);
                            places.push(t * routing.used + slot);
                        }
                    }
                    if places.is_empty() {
                        continue;
                    }
                    results.resize(rows.len(), 0.0);
                    let expert_order = order.for_expert(&routed, &mut tiled);
                    expert.forward(expert_order, &rows, hidden, &mut results)?;
                    for (place, result) in places.iter().zip(results.chunks_exact(width)) {
                        outputs[place * width..(place + 1) * width].copy_from_slice(result);
                    }
                }
                // Weighted, then added in the order the experts were chosen.
                for (t, (out_row, chosen)) in out.chunks_exact_mut(width).zip(&choices).enumerate()
                {
                    for (slot, &(_, weight)) in chosen.iter().enumerate() {
                        let place = t * routing.used + slot;
                        let result = &outputs[place * width..(place + 1) * width];
                        for (o, &r) in out_row.iter_mut().zip(result) {
                            let weighted = r * weight;
                            *o = if slot == 0 { weighted } else { *o + weighted };
                        }
                    }
                }
                Ok(())
            }
        }
    }

    /// Computes SiLU as llama.cpp built as `build` does.
    pub fn set_build(&mut self, build: GgmlBuild) {
        match self {
            Self::Dense(mlp) => mlp.set_build(build),
            Self::Experts { experts, .. } => experts.iter_mut().for_each(|e| e.set_build(build)),
        }
    }

    /// Checks that the experts' widths agree with the routing; the reason where they do not.
    pub fn check(&self, hidden: usize) -> std::result::Result<(), String> {
        if let Self::Experts {
            router,
            experts,
            routing,
        } = self
        {
            if routing.used == 0 || routing.used > routing.count || experts.len() != routing.count {
                return Err(format!(
                    "{} of {} experts per token with {} experts loaded",
                    routing.used,
                    routing.count,
                    experts.len()
                ));
            }
            if router.rows() != routing.count || router.cols() != hidden {
                return Err(format!(
                    "a router of {}x{} for {} experts of width {hidden}",
                    router.rows(),
                    router.cols(),
                    routing.count
                ));
            }
        }
        Ok(())
    }
}

/// One token's experts and their weights, in llama.cpp's order (most probable first), from
/// its router logits (overwritten with the probabilities).
fn route(logits: &mut [f32], routing: &ExpertRouting, build: GgmlBuild) -> Vec<(usize, f32)> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let inv = (1.0 / softmax_numerators_in(build, logits, max)) as f32;
    math::scale(logits, inv);
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    let mut chosen: Vec<(usize, f32)> = order[..routing.used]
        .iter()
        .map(|&e| (e, logits[e]))
        .collect();
    if routing.normalize_weights {
        // ggml_sum_rows adds in f64; the sum is kept from zero as llama.cpp clamps it.
        let sum: f64 = chosen.iter().map(|&(_, w)| f64::from(w)).sum();
        let sum = (sum as f32).max(6.103_515_6e-5);
        chosen.iter_mut().for_each(|(_, w)| *w /= sum);
    }
    if let Some(scale) = routing.weights_scale {
        chosen.iter_mut().for_each(|(_, w)| *w *= scale);
    }
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_takes_the_most_probable_experts_and_renormalises() {
        let routing = ExpertRouting {
            count: 4,
            used: 2,
            feed_forward_length: 8,
            normalize_weights: true,
            weights_scale: None,
        };
        let mut logits = [0.0f32, 2.0, -1.0, 1.0];
        let chosen = route(&mut logits, &routing, GgmlBuild::Avx2);
        assert_eq!(chosen.iter().map(|c| c.0).collect::<Vec<_>>(), [1, 3]);
        let total: f32 = chosen.iter().map(|c| c.1).sum();
        assert!((total - 1.0).abs() < 1e-6);
        // e / (e + 1) of the two: softmax over the pair alone.
        let want = 1.0f32.exp() / (1.0f32.exp() + 1.0);
        assert!((chosen[0].1 - want).abs() < 1e-5, "{chosen:?}");
    }
}
