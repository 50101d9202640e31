base:
  '*':
    - vmops_test
