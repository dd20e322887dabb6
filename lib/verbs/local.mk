# verbs provider build fragment (filled by the verbs provider)
