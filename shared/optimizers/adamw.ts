// AdamW (Loshchilov & Hutter 2019, "Decoupled Weight Decay Regularization"): Adam on the raw
// gradient, with weight decay applied to the weights instead of added to the gradient:
// w -= lr * (m_hat / (sqrt(v_hat) + eps) + wd * w), with w on the right the weights before the step.
// As in torch.optim.AdamW, wd is multiplied by lr (w *= 1 - lr*wd, then the Adam step), so the
// decay follows the LR schedule; the paper instead scales a separate alpha*Adam + wd by a
// schedule multiplier. Tensors of rank <= 1 (biases, batch-norm scales and offsets) are not
// decayed, the usual AdamW convention (and the rule of every optimizer here).

import { Adam } from './adam.js';

/** Adam with decoupled decay; state `{ t, m, v }`, as Adam's. */
export class AdamW extends Adam {
  override readonly name: string = 'adamw';
  protected override readonly decoupledDecay: boolean = true;
}
