//! Calico label selector language: parser and evaluator.
