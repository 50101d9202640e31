base:
  '*':
    - vmops_test
  'copr-*':
    - vmops_copr
